"""GET /v1/dashboard/summary?group_tag=NAME through the real server: spend
by the values of a reported tag, equal to the raw events of the range and
team, from raw events before aggregate_usage builds the name and from tag
rollups after; names not reported on get a 422."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.conftest import assert_error, auth
from tests.dashboard.conftest import SUMMARY, event, record
from tests.tracking.conftest import no_lag  # noqa: F401 - the fixture
from tracking.models import RequestEvent
from tracking.services import rollups_refresh

CUSTOMERS = ["acme", "globex", None, "initech"]


@pytest.fixture
def tagged(api, org, key):
    org.report_tags = ["customer"]
    org.save(update_fields=["report_tags"])
    now = datetime.now(UTC)
    events = [
        event(
            f"t-{i}",
            cost=f"0.{i:02d}00000001",
            started_at=now - timedelta(hours=i % 20, minutes=5),
            team=["search", "support"][i % 2],
            tags={"customer": c} if (c := CUSTOMERS[i % 4]) else {"env": "prod"},
        )
        for i in range(40)
    ]
    # Outside the 24 h range: not in its breakdown.
    events.append(event("old", cost="50", started_at=now - timedelta(days=3),
                        tags={"customer": "acme"}))  # fmt: skip
    record(api, key, events)
    return now


def expected(org, since: datetime, team: str | None = None) -> dict:
    sums: dict = defaultdict(lambda: [Decimal(0), 0])
    events = RequestEvent.objects.filter(org=org, started_at__gte=since)
    if team:
        events = events.filter(team__slug=team)
    for e in events:
        sums[e.tags.get("customer")][0] += e.cost_usd
        sums[e.tags.get("customer")][1] += 1
    return {k: (v[0], v[1]) for k, v in sums.items()}


def shown(body: dict) -> dict:
    return {
        v["value"]: (Decimal(v["spend_usd"]), v["requests"])
        for v in body["tag_breakdown"]["values"]
    }


@pytest.mark.usefixtures("no_lag")
def test_tag_breakdown_equals_the_database_raw_and_rolled_up(api, org, key, tagged):
    since = tagged.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    params = {"range": "24h", "group_tag": "customer"}

    raw = api.get(SUMMARY, params=params, headers=auth(key))
    assert raw.status_code == 200, raw.text
    assert raw.json()["tag_breakdown"]["tag"] == "customer"
    assert shown(raw.json()) == expected(org, since)
    assert None in shown(raw.json())

    rollups_refresh()
    rolled = api.get(SUMMARY, params=params, headers=auth(key)).json()
    assert shown(rolled) == expected(org, since)
    # The summary's own numbers are unchanged by the breakdown.
    total = sum(v[0] for v in shown(rolled).values())
    assert Decimal(rolled["kpis"]["spend_usd"]) == total

    team = api.get(SUMMARY, params={**params, "team": "support"}, headers=auth(key)).json()
    assert shown(team) == expected(org, since, team="support")


def test_without_group_tag_there_is_no_breakdown(api, org, key, tagged):
    body = api.get(SUMMARY, params={"range": "24h"}, headers=auth(key)).json()
    assert "tag_breakdown" not in body


def test_a_tag_not_reported_on_is_a_422(api, org, key, tagged):
    response = api.get(SUMMARY, params={"group_tag": "feature"}, headers=auth(key))
    assert_error(response, 422, "invalid_field", "group_tag")


def test_the_page_export_carries_the_tag_breakdown(api, client, org, key, make_user, tagged):
    client.force_login(make_user("ann", org=org))
    params = {"range": "24h", "group_tag": "customer"}

    exported = client.get("/dashboard/export", {**params, "format": "json"})
    shown = api.get(SUMMARY, params=params, headers=auth(key)).json()
    assert exported.status_code == 200
    assert exported.json()["tag_breakdown"] == shown["tag_breakdown"]

    lines = client.get("/dashboard/export", {**params, "format": "csv"}).content.decode()
    acme = shown["tag_breakdown"]["values"][0]
    assert f"tag_customer,{acme['value']},,spend_usd,{acme['spend_usd']}" in lines.splitlines()

    refused = client.get("/dashboard/export", {"group_tag": "feature"})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "group_tag"


@pytest.mark.usefixtures("no_lag")
def test_the_breakdown_follows_the_model_filter_and_not_a_user_one(api, org, key, tagged):
    record(api, key, [event("claude", cost="4", model="claude-sonnet-4-5",
                            tags={"customer": "acme"})])  # fmt: skip
    rollups_refresh()
    params = {"range": "24h", "group_tag": "customer"}

    claude = api.get(SUMMARY, params={**params, "model": "claude-sonnet-4-5"}, headers=auth(key))
    assert shown(claude.json()) == {"acme": (Decimal(4), 1)}

    by_user = api.get(SUMMARY, params={**params, "user": "alice"}, headers=auth(key))
    assert by_user.status_code == 200 and "tag_breakdown" not in by_user.json()
