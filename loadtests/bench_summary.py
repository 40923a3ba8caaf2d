"""Latency of GET /v1/dashboard/summary on a running server: N requests per
range, one after another (latency, not throughput), and p50 / p95 / p99 / max.

    .venv/bin/python -m loadtests.bench_summary --key KEY [--url URL] [--requests N]
        [--team SLUG] [--user ID] [--model NAME] [--ranges 24h,7d,30d,mtd,last_month,custom]
        [--from YYYY-MM-DD --to YYYY-MM-DD]

`custom` is the range from `--from` to `--to` (default: the 15 UTC days that
ended 6 days ago).

Start the server with DASHBOARD_SUMMARY_MAX_AGE_MS=0 to time computations: it
otherwise answers repeated requests with a summary it keeps, and this says
how many answers were reused. loadtests.scale runs it on one uvicorn worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import TextIO

import httpx


class BenchFailed(Exception):
    """The server answered a request with something other than 200."""


def measure(client: httpx.Client, params: dict[str, str], count: int, out: TextIO) -> None:
    first = client.get("/v1/dashboard/summary", params=params)  # warms the pool
    if first.status_code != 200:
        raise BenchFailed(f"{first.status_code}: {first.text}")
    times = []
    reused = 0
    for _ in range(count):
        started = time.perf_counter()
        response = client.get("/v1/dashboard/summary", params=params)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise BenchFailed(f"{response.status_code}: {response.text}")
        reused += 'desc="reused"' in response.headers.get("server-timing", "")
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    label = " ".join(f"{k}={v}" for k, v in params.items())
    out.write(
        f"{label:<22} n={count}  p50 {statistics.median(times):6.1f} ms  "
        f"p95 {p95:6.1f} ms  p99 {p99:6.1f} ms  max {times[-1]:6.1f} ms  "
        f"({len(first.content) / 1024:.0f} KiB)\n"
    )
    if reused:
        out.write(
            f"  {reused} of {count} answers were reused, not computed: the server keeps "
            "a summary for DASHBOARD_SUMMARY_MAX_AGE_MS; set it to 0 there to measure "
            "the computation\n"
        )


def default_custom(today: date | None = None) -> tuple[date, date]:
    """The custom range measured unless told: 15 days that ended 6 days ago."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=20), today - timedelta(days=6)


def bench(
    *,
    url: str,
    key: str,
    requests: int,
    team: str,
    ranges: list[str],
    out: TextIO,
    filters: dict[str, str] | None = None,
    custom: tuple[date, date] | None = None,
) -> None:
    """Every range in turn, org-wide or for `team` (and the `filters`, user
    and model); one line per range on `out`."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    headers = {"Authorization": f"Bearer {key}"}
    first, last = custom or default_custom()
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for range_ in ranges:
            params = {"range": range_}
            if range_ == "custom":
                params.update({"from": first.isoformat(), "to": last.isoformat()})
            params.update({"team": team} if team else {})
            params.update({k: v for k, v in (filters or {}).items() if v})
            measure(client, params, requests, out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # The summary's ranges are the dashboard's own; reading them needs Django.
    from dashboard.api import RANGES

    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_summary",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="An API key of the organization.")
    parser.add_argument("--requests", type=int, default=200, help="Per range.")
    parser.add_argument("--team", default="", help="Also filter by this team.")
    parser.add_argument("--user", default="", help="Also filter by this end user.")
    parser.add_argument("--model", default="", help="Also filter by this model.")
    parser.add_argument("--ranges", default=",".join(RANGES))
    parser.add_argument("--from", dest="from_", type=date.fromisoformat, default=None)
    parser.add_argument("--to", type=date.fromisoformat, default=None)
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1.")
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    args = parse_args(argv)
    try:
        bench(
            url=args.url,
            key=args.key,
            requests=args.requests,
            team=args.team,
            ranges=args.ranges.split(","),
            out=sys.stdout,
            filters={"user": args.user, "model": args.model},
            custom=(args.from_, args.to) if args.from_ and args.to else None,
        )
    except BenchFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
