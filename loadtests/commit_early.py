"""Plain commits against early lock release, side by side, without HTTP.

    .venv/bin/python -m loadtests.commit_early [--connections 8] [--seconds 5] [--rounds 3]

Each of `--connections` connections takes single holds (the hot path's
`decide`, one transaction each) as fast as it can, all on the one org day
window of the bench org of loadtests/compare.py, so every hold waits for the
one before it to let go of that window's lock. The designs take turns for
`--seconds` each, `--rounds` times:

- plain: `SELECT tollgate_decide(...)`, a synchronous commit; the window's
  lock is held until the commit's WAL is flushed;
- early: `CALL tollgate_commit_early(tollgate_decide(...), NULL)`, what the
  server runs (HOTPATH_EARLY_LOCK_RELEASE): commit without waiting, locks go,
  then a small commit that waits for the flush before the answer;
- no flush (reference only, loses acknowledged holds in a crash):
  `synchronous_commit = off` for the plain statement.

Reports holds/s and per-hold latency percentiles per design, pooled over
rounds, to docs/benchmarks/commit-early.md. The bench org's holds and
windows are deleted before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import UTC, datetime

from loadtests.compare import (
    BASE_DIR,
    ORG_SLUG,
    delete_keys,
    django_setup,
    reset_windows,
    seed,
    write_report,
)
from loadtests.hold_cost import items
from loadtests.phases import percentile

REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "commit-early.md"
DESIGNS = ("plain", "early", "no flush")


def run_design(kwargs: dict, sql: str, options: str, org, connections: int, seconds: float):
    """Holds per second and every hold's latency (ms) of one turn."""
    import psycopg

    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(connections + 1)
    stop_at = [0.0]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        mine: list[float] = []
        try:
            with psycopg.connect(**kwargs, options=options) as conn:
                batch = items(org.id, org.time_zone, index * 100_000, 100_000)
                for params in batch[:5]:  # prepared, plans cached
                    conn.execute(sql, params).fetchone()
                start.wait()
                n = 5
                while time.perf_counter() < stop_at[0]:
                    began = time.perf_counter()
                    result = conn.execute(sql, batch[n]).fetchone()[0]
                    mine.append((time.perf_counter() - began) * 1000)
                    assert result["status"] == "held", result
                    n += 1
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            start.abort()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return len(latencies) / (time.perf_counter() - began), latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.commit_early", description=__doc__)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per turn")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    django_setup()
    from budgets.db import COMMITTING_EARLY, QUERIES, connection_kwargs
    from budgets.models import Organization

    seed()
    delete_keys()
    org = Organization.objects.get(slug=ORG_SLUG)
    kwargs = connection_kwargs()
    kwargs.pop("options", None)
    statements = {
        "plain": (QUERIES["decide"], ""),
        "early": (COMMITTING_EARLY["decide"], ""),
        "no flush": (QUERIES["decide"], "-c synchronous_commit=off"),
    }
    rates: dict[str, list[float]] = {d: [] for d in DESIGNS}
    latencies: dict[str, list[float]] = {d: [] for d in DESIGNS}
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    try:
        for round_ in range(1, args.rounds + 1):
            for design in DESIGNS:
                reset_windows()
                sql, options = statements[design]
                rate, times = run_design(kwargs, sql, options, org, args.connections, args.seconds)
                times.sort()
                rates[design].append(rate)
                latencies[design].extend(times)
                print(
                    f"round {round_} {design}: {rate:,.0f} holds/s, "
                    f"p50 {percentile(times, 50):.2f} ms, p99 {percentile(times, 99):.2f} ms",
                    flush=True,
                )
    finally:
        reset_windows()
    load = max(load_before, os.getloadavg()[0])
    plain = sum(rates["plain"]) / len(rates["plain"])
    lines = [
        "# Plain commits against early lock release (hot-path SQL without HTTP)",
        "",
        f"Generated by `.venv/bin/python -m loadtests.commit_early --connections "
        f"{args.connections} --seconds {args.seconds:g} --rounds {args.rounds}` on "
        f"{started:%Y-%m-%d %H:%M} UTC; load average {load:.1f} on {os.cpu_count()} cores.",
        "",
        f"{args.connections} connections take single holds on one org day window (every "
        f"hold locks it), the designs in turns of {args.seconds:g} s, {args.rounds} rounds.",
        "",
        "| design | holds/s per turn | mean, x plain | p50 ms | p95 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for design in DESIGNS:
        times = sorted(latencies[design])
        mean = sum(rates[design]) / len(rates[design])
        lines.append(
            f"| {design} | {', '.join(f'{r:,.0f}' for r in rates[design])} | "
            f"{mean / plain:.2f}x | {percentile(times, 50):.2f} | "
            f"{percentile(times, 95):.2f} | {percentile(times, 99):.2f} |"
        )
    lines += [
        "",
        "plain: `SELECT tollgate_decide(...)`, the window locked until the commit is "
        "flushed. early: `CALL tollgate_commit_early(tollgate_decide(...), NULL)` "
        "(HOTPATH_EARLY_LOCK_RELEASE), the lock gone at commit, the answer after the "
        "flush. no flush: `synchronous_commit = off`, a reference that acknowledges "
        "holds a crash would lose; the server never runs it.",
        "",
    ]
    write_report(REPORT_PATH, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
