"""PostgreSQL's own cost of a hold, without HTTP: what caps the hot path.

    .venv/bin/python -m loadtests.hold_cost [--seconds 3] [--sizes 1,8,32,64] [--budgets six]

Calls the hot path's SQL directly (one connection, autocommit, the same
parameters DecisionBatcher sends) for the bench org of loadtests/harness/seed.py:
`decide` for single holds and `decide_many` with batches of each size. For
each it reports wall time and the PostgreSQL backend's CPU time per hold (read
from /proc/<backend pid>/stat, so other processes on a busy machine change it
far less than wall time; resolution one clock tick, hence a few seconds per
size). Writes the table to docs/benchmarks/hold-cost.md (with `--budgets
six`, the six-budget request of loadtests/harness/seed.py, to
docs/benchmarks/hold-cost-six.md). The bench org's reservations and windows
are deleted before and after.

Only the embedded (or local) PostgreSQL is used: the backend's CPU is read
from /proc, so the database must run on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from loadtests.harness.paths import BASE_DIR
from loadtests.harness.seed import (
    BUDGETS,
    FEATURES,
    HOLD_USD,
    ORG_SLUG,
    SIX_MODEL,
    TEAMS,
    USERS_PER_TEAM,
    delete_keys,
    django_setup,
    reset_windows,
    seed,
)
from loadtests.reports.markdown import write_report

REPORT_DIR = BASE_DIR / "docs" / "benchmarks"
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    query: str
    batch: int
    holds: int
    wall_us: float
    cpu_us: float


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def items(org_id: int, start: int, count: int, key_id: int | None = None) -> list[dict]:
    """Holds of consecutive subjects; with `key_id`, the six-budget request
    (seed.request_body): the model, two tags and the key."""
    subjects = [(t, u) for t in range(1, TEAMS + 1) for u in range(1, USERS_PER_TEAM + 1)]
    out = []
    for n in range(start, start + count):
        t, u = subjects[n % len(subjects)]
        six = key_id is not None
        out.append(
            {
                "org_id": org_id,
                "strict": False,
                "team": f"team-{t:02d}",
                "user": f"user-{t:02d}-{u:02d}",
                "model": SIX_MODEL if six else None,
                "amount": HOLD_USD,
                "input_tokens": None,
                "max_output_tokens": None,
                "hold": True,
                "ttl_seconds": 300,
                "at": None,
                "key_id": key_id,
                "service_tier": "",
                "tags": {"feature": f"f-{t % FEATURES + 1}", "customer": f"c-{t:02d}"}
                if six
                else None,
            }
        )
    return out


def measure(
    conn, sql_decide: str, sql_many: str, org, size: int, seconds: float, key_id: int | None
) -> Row:
    from psycopg.types.json import Jsonb

    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    n = 0

    def call() -> None:
        nonlocal n
        batch = items(org.id, n, size, key_id)
        n += size
        if size == 1:
            params = dict(batch[0], tags=Jsonb(batch[0]["tags"]) if key_id else None)
            result = conn.execute(sql_decide, params).fetchone()[0]
            assert result["status"] == "held", result
        else:
            results = json.loads(conn.execute(sql_many, {"items": Jsonb(batch)}).fetchone()[0])
            assert all(r["status"] == "held" for r in results), results[:1]

    for _ in range(max(3, 64 // size)):  # warm-up: plans cached, prepared
        call()
    holds_before, cpu_before, started = n, backend_cpu(pid), time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
    wall = time.perf_counter() - started
    cpu = backend_cpu(pid) - cpu_before
    holds = n - holds_before
    name = "decide" if size == 1 else "decide_many"
    return Row(name, size, holds, wall / holds * 1e6, cpu / holds * 1e6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.hold_cost", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per size")
    parser.add_argument("--sizes", default="1,8,32,64", help="batch sizes (1 = single decide)")
    parser.add_argument(
        "--budgets",
        choices=BUDGETS,
        default="org",
        help="org: one org budget per hold; six: the six-budget request (loadtests.harness.seed)",
    )
    args = parser.parse_args(argv)
    django_setup()
    import psycopg

    from budgets.models import ApiKey, Organization
    from config.hotpath.db import QUERIES, connection_kwargs

    delete_keys()
    seed(budgets=args.budgets)
    org = Organization.objects.get(slug=ORG_SLUG)
    key_id = None
    if args.budgets == "six":
        key_id = ApiKey.objects.get(org=org, name="loadtests.compare").pk
    else:
        delete_keys()
    reset_windows()
    rows: list[Row] = []
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    try:
        with psycopg.connect(**connection_kwargs()) as conn:
            for size in (int(s) for s in args.sizes.split(",")):
                row = measure(
                    conn,
                    QUERIES["decide"],
                    QUERIES["decide_many"],
                    org,
                    size,
                    args.seconds,
                    key_id,
                )
                rows.append(row)
                print(
                    f"{row.query} x{row.batch}: {row.holds} holds, "
                    f"{row.wall_us:.0f} us wall, {row.cpu_us:.0f} us PostgreSQL CPU per hold",
                    flush=True,
                )
    finally:
        reset_windows()
        delete_keys()
    load = max(load_before, os.getloadavg()[0])
    busy = load > (os.cpu_count() or 1)
    lines = [
        "# PostgreSQL cost per hold (hot-path SQL without HTTP)",
        "",
        f"Generated by `.venv/bin/python -m loadtests.hold_cost --seconds {args.seconds:g} "
        f"--sizes {args.sizes}{' --budgets six' if key_id else ''}` "
        f"on {started:%Y-%m-%d %H:%M} UTC.",
        "",
        "| query | holds per call | holds | wall µs / hold | backend CPU µs / hold |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| `{r.query}` | {r.batch} | {r.holds:,} | {r.wall_us:,.0f} | {r.cpu_us:,.0f} |"
            for r in rows
        ),
        "",
        f"One connection in autocommit (one transaction per call, as the server runs them), "
        f"${HOLD_USD} holds spread over the {TEAMS} x {USERS_PER_TEAM} subjects of org "
        f"`{ORG_SLUG}`, "
        + (
            "each on six budgets: the org's, its team's (model-filtered), its user's, the "
            "key's and two tag budgets. "
            if key_id
            else "all on its one org day window. "
        )
        + "Wall time includes the commit's "
        "WAL flush and the round trip; backend CPU is the PostgreSQL process's user + "
        "system time from /proc, which a busy machine inflates much less than wall time.",
        "",
        f"{'⚠ ' if busy else ''}Load average during the run: {load:.1f} on "
        f"{os.cpu_count()} cores{' (busy: wall times are not comparable)' if busy else ''}.",
        "",
    ]
    write_report(REPORT_DIR / ("hold-cost-six.md" if key_id else "hold-cost.md"), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
