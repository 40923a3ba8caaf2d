"""Prometheus metrics of the JSON API (GET /metrics), per process.

With several worker processes each exposes its own numbers; scrape every
worker (or run one worker per container), as usual for uvicorn/gunicorn.
Alert deliveries happen in `run_worker`, another process: /metrics reports
them from the database (`tollgate_alerts`), so any server process has them and
they survive restarts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
STORE_UNAVAILABLE = Counter(
    "tollgate_store_unavailable",
    "Hot-path database calls that got no answer: reason timeout (BUDGET_DB_TIMEOUT_MS), "
    "pool_timeout (no pooled connection in time) or error (driver error).",
    ["reason"],
)
READ_RETRIES = Counter(
    "tollgate_read_retries",
    "Reads retried on a fresh connection after a transient driver error.",
    ["query"],
)


@functools.cache
def labelled(metric: Any, *values: str | int) -> Any:
    """`metric.labels(*values)`, looked up once per label set: labels()
    converts and checks the values and takes a lock on every call, three
    times per hot-path request. Label sets here are few (routes, statuses)."""
    return metric.labels(*values)


class PoolCollector(Collector):
    """The hot-path pool's own statistics, read at scrape time."""

    GAUGES = (
        ("pool_max", "Most connections the hot-path pool may open (HOTPATH_POOL_MAX)."),
        ("pool_size", "Connections open (or opening) in the hot-path pool."),
        ("pool_available", "Idle connections in the hot-path pool."),
        (
            "in_use",
            "Hot-path pool connections not idle: lent out to requests, or being reopened.",
        ),
        ("requests_waiting", "Requests waiting for a pooled connection."),
        ("requests_errors", "Requests that got no connection (timeout, error) since start."),
        ("connections_errors", "Failed connection attempts since start."),
        ("connections_lost", "Connections found broken by the pool's check since start."),
        ("returns_bad", "Connections returned broken and discarded since start."),
    )

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        stats["in_use"] = stats.get("pool_size", 0) - stats.get("pool_available", 0)
        return self._gauges(stats)

    def _gauges(self, stats: dict[str, int]) -> Iterator[Metric]:
        for name, help_text in self.GAUGES:
            gauge = GaugeMetricFamily(f"tollgate_hotpath_{name}", help_text)
            gauge.add_metric([], stats.get(name, 0))
            yield gauge


def render(alerts: dict[str, Any] | None = None) -> bytes:
    """The registry in text format, plus the alert gauges when `alerts` (from
    the `alert_counts` query: {status: {"alerts": n, "attempts": n}}) is known;
    a scrape while the database is down leaves them out."""
    text = generate_latest(REGISTRY)
    if alerts is None:
        return text
    return text + generate_latest(_AlertCounts(alerts))


class _AlertCounts(Collector):
    def __init__(self, counts: dict[str, Any]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        alerts = GaugeMetricFamily(
            "tollgate_alerts",
            "Budget alerts by delivery status (pending, delivered, failed, skipped), "
            "from the database.",
            labels=["delivery"],
        )
        attempts = GaugeMetricFamily(
            "tollgate_alert_delivery_attempts",
            "Webhook delivery attempts made for the alerts of each delivery status.",
            labels=["delivery"],
        )
        for status in ("pending", "delivered", "failed", "skipped"):
            row = self.counts.get(status, {})
            alerts.add_metric([status], row.get("alerts", 0))
            attempts.add_metric([status], row.get("attempts", 0))
        yield alerts
        yield attempts
