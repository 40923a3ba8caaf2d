"""Prometheus metrics of the JSON API (GET /metrics), per process.

With several worker processes each exposes its own numbers; scrape every
worker (or run one worker per container), as usual for uvicorn/gunicorn.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from budgets import db

REQUESTS = Counter(
    "tollgate_http_requests",
    "API requests by route, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "tollgate_http_request_duration_seconds",
    "API request latency by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DECISIONS = Counter(
    "tollgate_decisions",
    "Budget decisions: kind check|reserve; outcome "
    "allow|deny|degraded (fail-open)|unavailable (fail-closed).",
    ["kind", "outcome"],
)
EVENTS = Counter("tollgate_events", "Recorded events: new or duplicate.", ["result"])


class PoolCollector(Collector):
    """The hot-path pool's own statistics, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        stats = db.pool_stats()
        for name, help_text in (
            ("pool_size", "Connections open in the hot-path pool."),
            ("pool_available", "Idle connections in the hot-path pool."),
            ("requests_waiting", "Requests waiting for a pooled connection."),
            ("requests_errors", "Requests that got no connection (timeout, error) since start."),
            ("connections_errors", "Failed connection attempts since start."),
        ):
            gauge = GaugeMetricFamily(f"tollgate_hotpath_{name}", help_text)
            gauge.add_metric([], stats.get(name, 0))
            yield gauge


REGISTRY.register(PoolCollector())


def render() -> bytes:
    return generate_latest(REGISTRY)
