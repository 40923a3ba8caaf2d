"""Random (UUID version 4) against time-ordered (version 7) reservation ids:
what inserting a new hold costs the primary key's index of a large table.

    .venv/bin/python -m loadtests.hold_ids [--rows 5000000] [--inserts 30000] [--rounds 3]

Two scratch tables with budgets_reservation's columns are filled with --rows
holds each: one with random ids (gen_random_uuid, as before migration 0022),
one with version 7 ids spread over the last 7 days in the order they were
taken (what RESERVATION_RETENTION_DAYS keeps). Then --inserts holds are
inserted into each, one statement each in autocommit like the hot path's
holds, alternating between the tables for --rounds rounds (the order swapped
every round), each round right after a CHECKPOINT as the first writes of a
checkpoint cycle. Per insert: wall time and WAL written (a page first changed
after a checkpoint is written to the WAL whole); and each primary key's size.

The tables live in the schema loadtests_hold_ids, which is dropped at the end.
Writes docs/benchmarks/hold-ids.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime

from loadtests.harness.paths import BASE_DIR
from loadtests.harness.seed import django_setup
from loadtests.reports.markdown import write_report

REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "hold-ids.md"
SCHEMA = "loadtests_hold_ids"
KINDS = ("v4", "v7")
NEW_ID = {"v4": "gen_random_uuid()", "v7": "tollgate_new_reservation_id()"}
COLUMNS = """id uuid PRIMARY KEY, org_id bigint NOT NULL, team_id bigint, user_id bigint,
    amount numeric(20, 10) NOT NULL, status varchar(16) NOT NULL, window_ids bigint[] NOT NULL,
    model varchar(200) NOT NULL, created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL, closed_at timestamptz"""


def fill(cursor, kind: str, rows: int) -> None:
    """`rows` closed holds taken over the last 7 days, oldest first."""
    at = "now() - interval '7 days' + i * (interval '7 days' / %(rows)s)"
    id_ = "gen_random_uuid()" if kind == "v4" else "tollgate_new_reservation_id(t.at)"
    cursor.execute(f"CREATE TABLE {SCHEMA}.{kind} ({COLUMNS})")
    cursor.execute(
        f"""
        INSERT INTO {SCHEMA}.{kind}
        SELECT {id_}, 1, 2, 3, 0.01, 'settled', '{{1,2,3}}', 'gpt-4o', t.at,
               t.at + interval '5 minutes', t.at + interval '2 seconds'
        FROM generate_series(1, %(rows)s) i CROSS JOIN LATERAL (SELECT {at} AS at) t
        """,
        {"rows": rows},
    )
    cursor.execute(f"VACUUM (ANALYZE) {SCHEMA}.{kind}")


def insert_round(cursor, kind: str, inserts: int) -> tuple[float, float]:
    """µs and WAL bytes per insert of `inserts` new holds, right after a checkpoint."""
    statement = (
        f"INSERT INTO {SCHEMA}.{kind} VALUES ({NEW_ID[kind]}, 1, 2, 3, 0.01, 'active', "
        "'{1,2,3}', 'gpt-4o', now(), now() + interval '5 minutes', NULL)"
    )
    cursor.execute("CHECKPOINT")
    cursor.execute("SELECT pg_current_wal_insert_lsn()")
    wal_before = cursor.fetchone()[0]
    started = time.perf_counter()
    for _ in range(inserts):
        cursor.execute(statement)
    elapsed = time.perf_counter() - started
    cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", [wal_before])
    wal = float(cursor.fetchone()[0])
    return elapsed / inserts * 1e6, wal / inserts


def index_size(cursor, kind: str) -> int:
    cursor.execute("SELECT pg_relation_size(%s::regclass)", [f"{SCHEMA}.{kind}_pkey"])
    return cursor.fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.hold_ids", description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000, help="holds in each table first")
    parser.add_argument("--inserts", type=int, default=30_000, help="holds inserted per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds for each kind of id")
    args = parser.parse_args(argv)
    if min(args.rows, args.inserts, args.rounds) < 1:
        parser.error("--rows, --inserts and --rounds must be at least 1")
    django_setup()
    from django.db import connection

    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    key_before: dict[str, int] = {}
    with connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        cursor.execute(f"CREATE SCHEMA {SCHEMA}")
        try:
            for kind in KINDS:
                print(f"Filling the {kind} table with {args.rows:,} holds …", flush=True)
                fill(cursor, kind, args.rows)
                key_before[kind] = index_size(cursor, kind)
            for round_ in range(args.rounds):
                for kind in KINDS if round_ % 2 == 0 else reversed(KINDS):
                    us, wal = insert_round(cursor, kind, args.inserts)
                    results[kind].append((us, wal))
                    print(f"{kind}: {us:.1f} µs, {wal:,.0f} WAL bytes per insert", flush=True)
            key_after: dict[str, int] = {kind: index_size(cursor, kind) for kind in KINDS}
        finally:
            cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    load = max(load_before, os.getloadavg()[0])
    median = {
        kind: tuple(statistics.median(r[i] for r in results[kind]) for i in (0, 1))
        for kind in KINDS
    }
    mb = 1024 * 1024
    grown = {kind: (key_after[kind] - key_before[kind]) / mb for kind in KINDS}
    lines = [
        "# Reservation ids: random (v4) against time-ordered (v7)",
        "",
        f"Generated by `.venv/bin/python -m loadtests.hold_ids --rows {args.rows} "
        f"--inserts {args.inserts} --rounds {args.rounds}` on {started:%Y-%m-%d %H:%M} UTC "
        f"(load average {load:.1f} on {os.cpu_count()} cores).",
        "",
        f"Each table first held {args.rows:,} holds taken over the last 7 days; each round "
        f"inserted {args.inserts:,} more, one statement each (autocommit), right after a "
        "CHECKPOINT; rounds alternated between the tables.",
        "",
        "| ids | µs per insert, each round | median | WAL bytes per insert, each round "
        "| median | primary key before → after (MB) |",
        "|---|---|---:|---|---:|---|",
    ]
    for kind in KINDS:
        rounds = results[kind]
        lines.append(
            f"| {kind} | {', '.join(f'{us:.1f}' for us, _ in rounds)} | **{median[kind][0]:.1f}** "
            f"| {', '.join(f'{wal:,.0f}' for _, wal in rounds)} | **{median[kind][1]:,.0f}** "
            f"| {key_before[kind] / mb:.0f} → {key_after[kind] / mb:.0f} (+{grown[kind]:.1f}) |"
        )
    lines += [
        "",
        f"Time-ordered ids: {median['v7'][1] / median['v4'][1]:.2f}x the WAL per insert of "
        f"random ones, {median['v7'][0] / median['v4'][0]:.2f}x the time, and a primary key "
        f"{key_after['v7'] / key_after['v4']:.2f}x the size. A random id changes a random leaf "
        "page of the key, and a page's first change after a checkpoint writes all of it to "
        "the WAL; a time-ordered one changes the last page, and splits there leave full "
        "pages behind instead of two half-full ones.",
        "",
    ]
    write_report(REPORT_PATH, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
