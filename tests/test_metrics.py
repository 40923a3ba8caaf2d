"""GET /metrics: Prometheus text with request, decision, ingest and pool metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import auth


def _samples(server) -> dict[tuple[str, tuple], float]:
    response = httpx.get(server.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_decisions_and_events(server, org, key, make_budget):
    make_budget(org, "1")
    before = _samples(server)
    with httpx.Client(base_url=server.url) as api:
        api.post("/v1/budget/reservations", json={"estimated_cost_usd": "0.6"}, headers=auth(key))
        api.post("/v1/budget/reservations", json={"estimated_cost_usd": "0.6"}, headers=auth(key))
        api.post("/v1/budget/check", json={"estimated_cost_usd": "0.1"}, headers=auth(key))
        event = {"id": "m-1", "model": "x", "cost_usd": "0.01"}
        api.post("/v1/events", json=event, headers=auth(key))
        api.post("/v1/events", json=event, headers=auth(key))
    after = _samples(server)

    def delta(name: str, **labels) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    route = "/v1/budget/reservations"
    assert delta("tollgate_http_requests_total", route=route, method="POST", status="201") == 1
    assert delta("tollgate_http_requests_total", route=route, method="POST", status="402") == 1
    assert delta("tollgate_http_request_duration_seconds_count", route=route) == 2
    assert delta("tollgate_decisions_total", kind="reserve", outcome="allow") == 1
    assert delta("tollgate_decisions_total", kind="reserve", outcome="deny") == 1
    assert delta("tollgate_decisions_total", kind="check", outcome="allow") == 1
    assert delta("tollgate_events_total", result="new") == 1
    assert delta("tollgate_events_total", result="duplicate") == 1
    assert _value(after, "tollgate_hotpath_pool_size") >= 1
