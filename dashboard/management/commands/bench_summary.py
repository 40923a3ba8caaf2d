from __future__ import annotations

import logging
import statistics
import time

import httpx
from django.core.management.base import BaseCommand, CommandError

from dashboard.api import RANGES


class Command(BaseCommand):
    help = (
        "Measure GET /v1/dashboard/summary on a running server: N requests per range, "
        "one after another (latency, not throughput), and print p50 / p95 / p99 / max."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--key", required=True, help="An API key of the organization.")
        parser.add_argument("--requests", type=int, default=200, help="Per range.")
        parser.add_argument("--team", default="", help="Also filter by this team.")
        parser.add_argument("--ranges", default=",".join(RANGES))

    def handle(self, *args, url: str, key: str, requests: int, team: str, ranges: str, **options):
        if requests < 1:
            raise CommandError("--requests must be at least 1.")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            for range_ in ranges.split(","):
                params = {"range": range_, **({"team": team} if team else {})}
                self.measure(client, params, requests)

    def measure(self, client: httpx.Client, params: dict[str, str], count: int) -> None:
        first = client.get("/v1/dashboard/summary", params=params)  # warms the pool
        if first.status_code != 200:
            raise CommandError(f"{first.status_code}: {first.text}")
        times = []
        reused = 0
        for _ in range(count):
            started = time.perf_counter()
            response = client.get("/v1/dashboard/summary", params=params)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise CommandError(f"{response.status_code}: {response.text}")
            reused += 'desc="reused"' in response.headers.get("server-timing", "")
        times.sort()
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        label = " ".join(f"{k}={v}" for k, v in params.items())
        self.stdout.write(
            f"{label:<22} n={count}  p50 {statistics.median(times):6.1f} ms  "
            f"p95 {p95:6.1f} ms  p99 {p99:6.1f} ms  max {times[-1]:6.1f} ms  "
            f"({len(first.content) / 1024:.0f} KiB)"
        )
        if reused:
            self.stdout.write(
                f"  {reused} of {count} answers were reused, not computed: the server keeps "
                "a summary for DASHBOARD_SUMMARY_MAX_AGE_MS; set it to 0 there to measure "
                "the computation"
            )
