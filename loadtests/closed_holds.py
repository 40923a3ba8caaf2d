"""What keeping closed holds in check costs: the partial index that finds them,
and run_worker's deletion.

    .venv/bin/python -m loadtests.closed_holds [--holds 30000] [--backlog 200000] [--rounds 3]

1. Closing holds with and without the index `reservation_closed`: --holds
   active holds of the bench org are settled in batches of 64 (one UPDATE by
   primary key each, as record_events settles them), alternating with and
   without the index for --rounds rounds each; µs per settle.
2. Deleting a backlog: --backlog holds of the bench org closed 400 days ago
   are deleted by `reservations_prune` (what run_worker calls each round),
   5,000 at a time; holds per second and the time per batch.

Its holds are the bench org's (loadtests/harness/seed.py), marked by model
"loadtests.closed_holds", and deleted at the end; part 2 deletes only holds
closed more than 399 days ago. The index is put back as the migration made it.
Writes docs/benchmarks/closed-holds.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from loadtests.harness.paths import BASE_DIR
from loadtests.harness.seed import ORG_SLUG, django_setup, seed
from loadtests.reports.markdown import write_report

REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "closed-holds.md"
MARK = "loadtests.closed_holds"
SETTLE_BATCH = 64
INDEX = "reservation_closed"


def insert_holds(cursor, org_id: int, count: int, closed_days_ago: int | None) -> list:
    status, closed = ("active", "NULL") if closed_days_ago is None else ("settled", "c.at")
    cursor.execute(
        f"""
        INSERT INTO budgets_reservation
            (id, org_id, amount, status, window_ids, model, created_at, expires_at, closed_at)
        SELECT gen_random_uuid(), %(org)s, 0.001, %(status)s, '{{}}', %(mark)s,
               c.at - interval '1 minute', c.at + interval '5 minutes', {closed}
        FROM generate_series(1, %(count)s) i
        CROSS JOIN LATERAL (SELECT now() - make_interval(days => %(days)s)
                                       + i * interval '1 millisecond' AS at) c
        RETURNING id
        """,
        {
            "org": org_id,
            "status": status,
            "mark": MARK,
            "count": count,
            "days": closed_days_ago or 0,
        },
    )
    return [row[0] for row in cursor.fetchall()]


def settle_round(cursor, org_id: int, holds: int, index_def: str, with_index: bool) -> float:
    """µs per settle of `holds` holds, with or without the index."""
    cursor.execute(f"DROP INDEX IF EXISTS {INDEX}")
    if with_index:
        cursor.execute(index_def)
    ids = insert_holds(cursor, org_id, holds, None)
    cursor.execute("VACUUM (ANALYZE) budgets_reservation")
    started = time.perf_counter()
    for i in range(0, len(ids), SETTLE_BATCH):
        cursor.execute(
            "UPDATE budgets_reservation SET status = 'settled', closed_at = now() "
            "WHERE id = ANY(%s)",
            [ids[i : i + SETTLE_BATCH]],
        )
    elapsed = time.perf_counter() - started
    cursor.execute("DELETE FROM budgets_reservation WHERE model = %s", [MARK])
    return elapsed / holds * 1e6


def prune_backlog(cursor, org_id: int, backlog: int) -> tuple[int, float, list[float]]:
    from budgets.services import RESERVATION_PRUNE_BATCH, reservations_prune

    for start in range(0, backlog, 50_000):
        insert_holds(cursor, org_id, min(50_000, backlog - start), 400)
    cursor.execute("VACUUM (ANALYZE) budgets_reservation")
    batches: list[float] = []
    deleted = 0
    started = time.perf_counter()
    while True:
        t = time.perf_counter()
        n = reservations_prune(older_than=timedelta(days=399))
        if n == RESERVATION_PRUNE_BATCH:
            batches.append((time.perf_counter() - t) * 1000)
        deleted += n
        if n < RESERVATION_PRUNE_BATCH:
            break
    return deleted, time.perf_counter() - started, batches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.closed_holds", description=__doc__)
    parser.add_argument("--holds", type=int, default=30_000, help="holds settled per round")
    parser.add_argument("--backlog", type=int, default=200_000, help="closed holds to delete")
    parser.add_argument("--rounds", type=int, default=3, help="rounds with and without the index")
    args = parser.parse_args(argv)
    if min(args.holds, args.backlog, args.rounds) < 1:
        parser.error("--holds, --backlog and --rounds must be at least 1")
    django_setup()
    from django.db import connection

    from budgets.models import Organization
    from budgets.services import RESERVATION_PRUNE_BATCH

    seed()
    org_id = Organization.objects.get(slug=ORG_SLUG).id
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    settles: dict[bool, list[float]] = {True: [], False: []}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_indexdef(%s::regclass)", [INDEX])
        index_def = cursor.fetchone()[0]
        try:
            for round_ in range(args.rounds):
                # Alternating, the order swapped every round: with, without; without, with; …
                for with_index in (True, False) if round_ % 2 == 0 else (False, True):
                    us = settle_round(cursor, org_id, args.holds, index_def, with_index)
                    settles[with_index].append(us)
                    print(
                        f"settle {'with' if with_index else 'without'} the index: {us:.1f} µs",
                        flush=True,
                    )
        finally:
            cursor.execute("DELETE FROM budgets_reservation WHERE model = %s", [MARK])
            cursor.execute(f"DROP INDEX IF EXISTS {INDEX}")
            cursor.execute(index_def)
        print(f"Deleting a backlog of {args.backlog:,} closed holds …", flush=True)
        try:
            deleted, seconds, batches = prune_backlog(cursor, org_id, args.backlog)
        finally:
            cursor.execute("DELETE FROM budgets_reservation WHERE model = %s", [MARK])
    print(f"deleted {deleted:,} in {seconds:.1f} s", flush=True)
    load = max(load_before, os.getloadavg()[0])
    with_us, without_us = (statistics.median(settles[k]) for k in (True, False))
    batches.sort()
    lines = [
        "# Closed holds: the index that finds them, and their deletion",
        "",
        f"Generated by `.venv/bin/python -m loadtests.closed_holds --holds {args.holds} "
        f"--backlog {args.backlog} --rounds {args.rounds}` on {started:%Y-%m-%d %H:%M} UTC "
        f"(load average {load:.1f} on {os.cpu_count()} cores).",
        "",
        "## Settling holds with and without `reservation_closed`",
        "",
        f"{args.holds:,} active holds settled in batches of {SETTLE_BATCH} per round "
        "(UPDATE by primary key, autocommit), alternating.",
        "",
        "| index | µs per settle, each round | median |",
        "|---|---|---:|",
        f"| with | {', '.join(f'{x:.1f}' for x in settles[True])} | **{with_us:.1f}** |",
        f"| without | {', '.join(f'{x:.1f}' for x in settles[False])} | **{without_us:.1f}** |",
        "",
        f"The index costs {with_us - without_us:+.1f} µs per settle "
        f"({(with_us / without_us - 1) * 100:+.0f}% of the bare UPDATE). A new hold never "
        "enters it (it is inserted active).",
        "",
        "## Deleting a backlog",
        "",
        f"{args.backlog:,} holds closed 400 days ago, deleted by `reservations_prune` "
        f"(run_worker's job) {RESERVATION_PRUNE_BATCH:,} at a time: **{deleted:,} in "
        f"{seconds:.1f} s ({deleted / seconds:,.0f} holds/s)**"
        + (
            f"; a batch took {statistics.median(batches):.0f} ms at the median, "
            f"{batches[-1]:.0f} ms at most."
            if batches
            else "."
        ),
        "",
    ]
    write_report(REPORT_PATH, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
