"""Key rollups (tracking_keyrollup): requests and cost per (org, hour, API
key, model), equal to the raw events recorded with a key through passes and
rebuilds, and what a key budget created mid-period seeds from once the raw
events of its period are pruned."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from budgets.models import ApiKey
from tests.conftest import auth
from tests.tracking.conftest import hours_ago, run
from tracking.models import KeyRollup, RequestEvent
from tracking.services import rollups_refresh


def record(api, key: str, event_id: str, cost: str, started_at, model: str = "m") -> None:
    body = {"id": event_id, "team": "search", "model": model, "cost_usd": cost,
            "started_at": started_at.isoformat()}  # fmt: skip
    response = api.post("/v1/events", json=body, headers=auth(key))
    assert response.status_code in (200, 201), response.text


def key_rollups() -> dict:
    return {(r.key_id, r.hour, r.model): (r.requests, r.cost_usd) for r in KeyRollup.objects.all()}


def raw_key_sums() -> dict:
    sums: dict = {}
    for e in RequestEvent.objects.exclude(key=None):
        hour = e.started_at.replace(minute=0, second=0, microsecond=0)
        requests, cost = sums.get((e.key_id, hour, e.model), (0, Decimal(0)))
        sums[(e.key_id, hour, e.model)] = (requests + 1, cost + e.cost_usd)
    return sums


@pytest.mark.usefixtures("no_lag")
def test_key_rollups_equal_the_raw_events_through_passes_and_rebuilds(api, org, make_key):
    keys = [make_key(org), make_key(org)]
    for i in range(12):
        record(api, keys[i % 2], f"e{i}", f"0.{i}000000001", hours_ago(i % 4, minutes=i),
               model=["a", "b", "c"][i % 3])  # fmt: skip
    rollups_refresh()
    assert key_rollups() == raw_key_sums() and len(key_rollups()) > 4

    record(api, keys[0], "late", "2", hours_ago(3, minutes=1), model="a")
    rollups_refresh()
    assert key_rollups() == raw_key_sums()

    KeyRollup.objects.filter(key__in=ApiKey.objects.filter(org=org)[:1]).update(cost_usd=9)
    run("aggregate_usage", "--rebuild", "--since", hours_ago(10).isoformat())
    assert key_rollups() == raw_key_sums()


@pytest.mark.usefixtures("no_lag")
def test_a_key_budget_counts_pruned_hours_from_the_key_rollups(api, org, make_key, admin_key):
    now = timezone.now()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if now - month_start < timedelta(hours=4):
        pytest.skip("needs three whole hours of this month before now")
    app, other = make_key(org), make_key(org)
    record(api, app, "old", "1.5", hours_ago(3, minutes=5))
    record(api, other, "theirs", "7", hours_ago(3, minutes=6))
    rollups_refresh()
    run("prune_events", "--older-than", "2h")
    assert not RequestEvent.objects.filter(event_id="old").exists()
    record(api, app, "kept", "0.25", now - timedelta(minutes=1))

    lookup_id = app.split("_")[1]
    response = api.put(
        f"/v1/budgets/key/{lookup_id}/month", json={"limit_usd": "10"}, headers=auth(admin_key)
    )

    assert response.status_code in (200, 201), response.text
    assert response.json()["spent_usd"] == "1.75"
