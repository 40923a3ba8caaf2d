"""GET /metrics: Prometheus text with request, decision, ingest, pool and
alert-delivery metrics. (Degraded and unavailable decisions and store
timeouts are asserted where an outage produces them: tests/system/test_outage.py.)"""

from __future__ import annotations

import io

import httpx
from django.core.management import call_command

from tests.budgets.test_alerts import Receiver
from tests.conftest import auth, metric, scrape_metrics


def test_metrics_count_requests_decisions_and_events(server, org, key, make_budget):
    make_budget(org, "1")
    before = scrape_metrics(server.url)
    with httpx.Client(base_url=server.url) as api:
        api.post("/v1/budget/reservations", json={"estimated_cost_usd": "0.6"}, headers=auth(key))
        api.post("/v1/budget/reservations", json={"estimated_cost_usd": "0.6"}, headers=auth(key))
        api.post("/v1/budget/check", json={"estimated_cost_usd": "0.1"}, headers=auth(key))
        event = {"id": "m-1", "model": "x", "cost_usd": "0.01"}
        api.post("/v1/events", json=event, headers=auth(key))
        api.post("/v1/events", json=event, headers=auth(key))
    after = scrape_metrics(server.url)

    def delta(name: str, **labels) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    route = "/v1/budget/reservations"
    assert delta("tollgate_http_requests_total", route=route, method="POST", status="201") == 1
    assert delta("tollgate_http_requests_total", route=route, method="POST", status="402") == 1
    assert delta("tollgate_http_request_duration_seconds_count", route=route) == 2
    assert delta("tollgate_decisions_total", kind="reserve", outcome="allow") == 1
    assert delta("tollgate_decisions_total", kind="reserve", outcome="deny") == 1
    assert delta("tollgate_decisions_total", kind="check", outcome="allow") == 1
    assert delta("tollgate_events_total", result="new") == 1
    assert delta("tollgate_events_total", result="duplicate") == 1
    assert metric(after, "tollgate_hotpath_pool_size") >= 1
    assert delta("tollgate_http_request_duration_seconds_bucket", route=route, le="+Inf") == 2
    assert (
        delta("tollgate_http_requests_total", route="/v1/events", method="POST", status="201") == 1
    )


def test_metrics_show_the_pool(server):
    httpx.get(server.url + "/readyz")  # the pool opens on first use
    samples = scrape_metrics(server.url)
    assert metric(samples, "tollgate_hotpath_pool_max") == 10  # HOTPATH_POOL_MAX of the test server
    assert 1 <= metric(samples, "tollgate_hotpath_pool_size") <= 10
    size, idle = (
        metric(samples, "tollgate_hotpath_pool_size"),
        metric(samples, "tollgate_hotpath_pool_available"),
    )
    assert metric(samples, "tollgate_hotpath_in_use") == size - idle
    for name in ("requests_waiting", "requests_errors", "connections_errors"):
        assert ("tollgate_hotpath_" + name, ()) in samples, name


def test_metrics_count_alert_deliveries_made_by_the_worker(
    server, org, key, make_budget, loopback_webhooks
):
    """Alerts are delivered by another process (run_worker); /metrics reads
    them from the database."""
    receiver = Receiver()
    try:
        org.webhook_url = receiver.url
        org.alerts_count_holds = True  # so that the hold below raises the alert
        org.save()
        make_budget(org, "1", soft_limit_pct=50)
        before = scrape_metrics(server.url)
        held = httpx.post(
            server.url + "/v1/budget/reservations",
            headers=auth(key),
            json={"estimated_cost_usd": "0.6"},
        )
        assert held.status_code == 201
        pending = scrape_metrics(server.url)
        call_command("deliver_alerts", stdout=io.StringIO())
        after = scrape_metrics(server.url)
    finally:
        receiver.server.shutdown()

    def change(samples, name: str, delivery: str) -> float:
        return metric(samples, name, delivery=delivery) - metric(before, name, delivery=delivery)

    assert len(receiver.bodies) == 1
    assert change(pending, "tollgate_alerts", "pending") == 1
    assert change(after, "tollgate_alerts", "pending") == 0
    assert change(after, "tollgate_alerts", "delivered") == 1
    assert change(after, "tollgate_alert_delivery_attempts", "delivered") == 1
