"""The dashboard's tag filter (`tag=name=value`) through the real server:
KPIs, chart, top teams and models, recent requests and unpriced usage equal
sums over the raw events that carry the tag, before and after
aggregate_usage rolls them up; top users say they cannot follow; the
budgets panel shows the org's budgets and that tag's; holds follow the tag;
names not reported on, malformed tags and a tag with a user filter get 422s."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from budgets.models import Budget
from tests.conftest import assert_error, auth
from tests.dashboard.conftest import SUMMARY, event, record
from tests.tracking.conftest import no_lag  # noqa: F401 - the fixture
from tracking.models import RequestEvent
from tracking.services import rollups_refresh

HOLDS = "/v1/dashboard/holds"
CUSTOMERS = ["acme", "globex", None, "acme", "initech"]
TEAMS = ["search", "support", "ads"]
MODELS = ["gpt-4o", "o4-mini", "claude-sonnet-4-5"]


@pytest.fixture
def tagged(api, org, key):
    org.report_tags = ["customer"]
    org.save(update_fields=["report_tags"])
    now = datetime.now(UTC)
    events = [
        event(
            f"t-{i}",
            cost=f"0.{i:02d}00000003",
            started_at=now - timedelta(hours=(i * 7) % 150, minutes=3),
            team=TEAMS[i % 3],
            user=["alice", "bob"][i % 2],
            model=MODELS[i % 3] if i % 11 else "mystery-model",
            status="error" if i % 9 == 0 else "ok",
            tags={"customer": c, "env": "prod"} if (c := CUSTOMERS[i % 5]) else {"env": "prod"},
        )
        for i in range(60)
    ]
    record(api, key, events)
    return now


def raw(org, since: datetime, **filters) -> list[RequestEvent]:
    events = RequestEvent.objects.filter(
        org=org, started_at__gte=since, tags__customer="acme", **filters
    )
    return list(events.select_related("team"))


def by(events: list[RequestEvent], key) -> dict:
    sums: dict = defaultdict(lambda: [Decimal(0), 0])
    for e in events:
        sums[key(e)][0] += e.cost_usd
        sums[key(e)][1] += 1
    return {k: (v[0], v[1]) for k, v in sums.items()}


def ranked(rows: list[dict]) -> dict:
    return {r["id"]: (Decimal(r["spend_usd"]), r["requests"]) for r in rows}


def check_follows_the_tag(body: dict, events: list[RequestEvent], split_by: str) -> None:
    kpis = body["kpis"]
    assert Decimal(kpis["spend_usd"]) == sum(e.cost_usd for e in events)
    assert kpis["requests"] == len(events)
    assert kpis["errors"] == sum(e.status == "error" for e in events)
    unpriced = [e for e in events if not e.priced]
    assert kpis["unpriced_requests"] == len(unpriced)
    assert Decimal(kpis["unpriced_usd"]) == sum(e.cost_usd for e in unpriced)
    chart = body["chart"]
    assert chart["split_by"] == split_by
    series_totals = {s["key"]: Decimal(s["total_usd"]) for s in chart["series"]}
    key = (lambda e: e.team.slug) if split_by == "team" else (lambda e: e.model)
    assert series_totals == {k: v[0] for k, v in by(events, key).items()}
    for s in chart["series"]:
        assert sum(Decimal(v) for v in s["values"]) == Decimal(s["total_usd"])
    assert ranked(body["top"]["teams"]) == by(events, lambda e: e.team.slug)
    assert ranked(body["top"]["models"]) == by(events, lambda e: e.model)
    # Tag usage keeps no end user: the panel says so rather than show all users.
    assert body["top"]["users"] == []
    assert body["tag_filter"]["not_followed"] == ["top.users"]
    newest = sorted(events, key=lambda e: e.started_at, reverse=True)[:50]
    assert [r["id"] for r in body["recent"]] == [e.event_id for e in newest]


@pytest.mark.usefixtures("no_lag")
def test_every_panel_follows_the_tag_raw_and_rolled_up(api, org, key, tagged):
    day = tagged.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    week_start = datetime.combine(
        (tagged - timedelta(days=6)).date(), datetime.min.time(), tzinfo=UTC
    )
    params = {"range": "7d", "tag": "customer=acme"}

    before = api.get(SUMMARY, params=params, headers=auth(key))
    assert before.status_code == 200, before.text
    body = before.json()
    assert body["tag"] == "customer=acme"
    assert body["tag_filter"]["name"] == "customer" and body["tag_filter"]["value"] == "acme"
    check_follows_the_tag(body, raw(org, week_start), "team")
    unfiltered = api.get(SUMMARY, params={"range": "7d"}, headers=auth(key)).json()
    assert Decimal(body["kpis"]["spend_usd"]) < Decimal(unfiltered["kpis"]["spend_usd"])

    rollups_refresh()
    rolled = api.get(SUMMARY, params=params, headers=auth(key)).json()
    check_follows_the_tag(rolled, raw(org, week_start), "team")
    # Today, month to date: the tag's too.
    today = datetime.combine(tagged.date(), datetime.min.time(), tzinfo=UTC)
    assert Decimal(rolled["kpis"]["today_usd"]) == sum(e.cost_usd for e in raw(org, today))

    hourly = api.get(SUMMARY, params={**params, "range": "24h"}, headers=auth(key)).json()
    check_follows_the_tag(hourly, raw(org, day), "team")

    team = api.get(SUMMARY, params={**params, "team": "search"}, headers=auth(key)).json()
    check_follows_the_tag(team, raw(org, week_start, team__slug="search"), "model")

    model = {**params, "model": "o4-mini"}
    narrowed = api.get(SUMMARY, params=model, headers=auth(key)).json()
    check_follows_the_tag(narrowed, raw(org, week_start, model="o4-mini"), "team")

    # Events received after the aggregation (the raw tail) count at once.
    record(api, key, [event("late", cost="3", team="ads", tags={"customer": "acme"})])
    tail = api.get(SUMMARY, params=params, headers=auth(key)).json()
    check_follows_the_tag(tail, raw(org, week_start), "team")
    assert tail["recent"][0]["id"] == "late"


def test_the_group_tag_breakdown_under_a_tag_filter(api, org, key, tagged):
    params = {"range": "7d", "tag": "customer=acme"}
    same = api.get(SUMMARY, params={**params, "group_tag": "customer"}, headers=auth(key)).json()
    values = same["tag_breakdown"]["values"]
    assert [v["value"] for v in values] == ["acme"]
    assert values[0]["spend_usd"] == same["kpis"]["spend_usd"]

    # A tag rollup holds one name: another name's values among acme's events
    # are not known, and no breakdown is shown rather than a wrong one.
    org.report_tags = ["customer", "env"]
    org.save(update_fields=["report_tags"])
    other = api.get(SUMMARY, params={**params, "group_tag": "env"}, headers=auth(key))
    assert other.status_code == 200 and "tag_breakdown" not in other.json()


def test_a_tag_not_reported_on_is_a_422_that_says_how_to_report_it(api, org, key, tagged):
    for path in (SUMMARY, HOLDS):
        response = api.get(path, params={"tag": "env=prod"}, headers=auth(key))
        assert_error(response, 422, "invalid_field", "tag")
        message = response.json()["error"]["message"]
        assert "'env'" in message and "report_tags" in message and "PATCH /v1/org" in message


def test_malformed_tags_and_a_tag_with_a_user_are_422s(api, org, key, tagged):
    for params in ({"tag": "customer"}, {"tag": "=acme"}, {"tag": "customer=acme", "user": "bob"}):
        response = api.get(SUMMARY, params=params, headers=auth(key))
        assert_error(response, 422, "invalid_field", "tag")
    # An empty value is a value (a tag may be sent empty); an empty filter none.
    assert api.get(SUMMARY, params={"tag": "customer="}, headers=auth(key)).status_code == 200
    assert "tag_filter" in api.get(SUMMARY, params={"tag": ""}, headers=auth(key)).json()


def test_budgets_panel_shows_the_orgs_and_the_tags_budgets(api, org, key, make_budget, tagged):
    make_budget(org, "100", period="month")
    make_budget(org, "10", scope="team", team="search")
    for tag in ("customer=acme", "customer=globex", "env=prod"):
        Budget.objects.create(org=org, scope="tag", tag=tag, period="day", limit_usd=50)
    record(api, key, [event("b1", cost="5", tags={"customer": "acme"})])

    def shown(params: dict) -> list[tuple[str, str]]:
        body = api.get(SUMMARY, params=params, headers=auth(key)).json()
        return sorted((b["scope"], b["id"]) for b in body["budgets"])

    acme = shown({"tag": "customer=acme"})
    assert acme == [("org", "acme"), ("tag", "customer=acme")]
    assert shown({"tag": "customer=acme", "team": "search"}) == [
        ("org", "acme"),
        ("tag", "customer=acme"),
        ("team", "search"),
    ]
    assert len(shown({})) == 5
    body = api.get(SUMMARY, params={"tag": "customer=acme"}, headers=auth(key)).json()
    budget = next(b for b in body["budgets"] if b["scope"] == "tag")
    assert Decimal(budget["spent_usd"]) >= 5


def test_holds_follow_the_tag(api, org, key, tagged, client, make_user):
    def hold(amount: str, tags: dict | None) -> str:
        body = {"estimated_cost_usd": amount, "team": "search", "model": "gpt-4o"}
        response = api.post(
            "/v1/budget/reservations", json={**body, "tags": tags}, headers=auth(key)
        )
        assert response.status_code == 201, response.text
        return response.json()["reservation_id"]

    acme = hold("2", {"customer": "acme"})
    hold("3", {"customer": "globex"})
    hold("4", None)

    holds = api.get(HOLDS, params={"tag": "customer=acme"}, headers=auth(key)).json()
    assert (holds["count"], holds["held_usd"]) == (1, "2")
    assert [h["id"] for h in holds["newest"]] == [acme]
    summary = api.get(SUMMARY, params={"tag": "customer=acme"}, headers=auth(key)).json()
    assert summary["holds"] == holds

    # The page's export takes the same filter and says the same.
    client.force_login(make_user("ann", org=org))
    exported = client.get("/dashboard/export", {"tag": "customer=acme", "format": "json"})
    assert exported.status_code == 200
    assert exported.json()["holds"] == holds
    assert exported.json()["kpis"]["spend_usd"] == summary["kpis"]["spend_usd"]
    assert "customer" in exported["Content-Disposition"]
    refused = client.get("/dashboard/export", {"tag": "env=prod"})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "tag"


@pytest.mark.usefixtures("no_lag")
def test_recent_requests_are_the_tags_newest_fifty_across_hours(api, org, key):
    """More than 50 tagged requests, three an hour between untagged ones: the
    recent list is read from the newest hours that hold 50 (the last of them
    only partly), before and after the aggregation."""
    org.report_tags = ["customer"]
    org.save(update_fields=["report_tags"])
    now = datetime.now(UTC)
    events = [
        event(
            f"r-{hour}-{n}",
            cost="0.01",
            started_at=now - timedelta(hours=hour, minutes=10 + n * 10),
            tags={"customer": "acme"} if n < 3 else {"customer": "globex"},
        )
        for hour in range(30)
        for n in range(5)
    ]
    record(api, key, events)
    since = datetime.combine((now - timedelta(days=6)).date(), datetime.min.time(), tzinfo=UTC)
    tagged = sorted(raw(org, since), key=lambda e: e.started_at, reverse=True)
    assert len(tagged) == 90
    for _ in ("raw", "rolled up"):
        body = api.get(SUMMARY, params={"tag": "customer=acme"}, headers=auth(key)).json()
        assert [r["id"] for r in body["recent"]] == [e.event_id for e in tagged[:50]]
        assert body["kpis"]["requests"] == 90
        rollups_refresh()
