"""GET /dashboard/export: the page's data as CSV or JSON for the signed-in
session: equal to the summary endpoint and to the database, for the range and
team asked for, and never another organization's."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum

from tests.conftest import auth
from tests.dashboard.conftest import SUMMARY, cookie_header, event, record
from tracking.models import RequestEvent

EXPORT = "/dashboard/export"
# What differs between two computations of the same summary a moment apart.
VOLATILE = {"generated_at", "snapshot", "chart_snapshot", "updates", "to", "aggregated_through"}


def csv_table(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


@pytest.fixture
def traffic(api, org, key, make_org, make_key, make_budget):
    now = datetime.now(UTC)
    events = [
        event(f"ev-{i}", cost=f"1.{i:02d}", started_at=now - timedelta(hours=i * 9), team=team)
        for i, team in enumerate(["search", "support", "search", "=cmd()", "support"] * 3)
    ]
    record(api, key, events)
    make_budget(org, "50", scope="team", team="search", period="month")
    other = make_org("globex")
    record(api, make_key(other), [event("theirs", cost="999.00", team="search")])
    return now


def test_json_export_is_the_summary_the_page_shows(api, client, org, make_user, traffic):
    user = make_user("ann", org=org)
    client.force_login(user)

    exported = client.get(EXPORT, {"format": "json", "range": "30d", "team": "search"})
    shown = api.get(SUMMARY, params={"range": "30d", "team": "search"}, headers=cookie_header(user))

    assert exported.status_code == 200 and shown.status_code == 200
    assert exported["Content-Disposition"] == 'attachment; filename="tollgate-acme-30d-search.json"'
    assert exported["Cache-Control"] == "no-store"
    body = exported.json()
    assert {k: v for k, v in body.items() if k not in VOLATILE} == {
        k: v for k, v in shown.json().items() if k not in VOLATILE
    }
    search = RequestEvent.objects.filter(org=org, team__slug="search")
    assert Decimal(body["kpis"]["spend_usd"]) == search.aggregate(s=Sum("cost_usd"))["s"]
    assert body["team"] == "search" and body["range"] == "30d"


def test_csv_export_holds_every_panel_with_the_database_numbers(client, org, make_user, traffic):
    client.force_login(make_user("ann", org=org))

    response = client.get(EXPORT, {"format": "csv", "range": "7d"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="tollgate-acme-7d.csv"'
    rows = csv_table(response)
    assert list(rows[0]) == ["section", "subject", "at", "metric", "value"]
    since = traffic.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=6)
    in_range = RequestEvent.objects.filter(org=org, started_at__gte=since)
    kpi = {r["metric"]: r["value"] for r in rows if r["section"] == "kpi"}
    assert Decimal(kpi["spend_usd"]) == in_range.aggregate(s=Sum("cost_usd"))["s"]
    assert int(kpi["requests"]) == in_range.count()
    top = {
        r["subject"]: Decimal(r["value"])
        for r in rows
        if r["section"] == "top_teams" and r["metric"] == "spend_usd"
    }
    by_team = in_range.values_list("team__slug").annotate(s=Sum("cost_usd"))
    # A team id that a spreadsheet would run as a formula is quoted.
    assert top == {("'" + t if t.startswith("=") else t): s for t, s in by_team}
    chart = [r for r in rows if r["section"] == "chart_team"]
    assert sum(Decimal(r["value"]) for r in chart) == sum(top.values())
    assert {r["subject"] for r in rows if r["section"] == "budget"} == {"team:search"}
    recent = {r["subject"] for r in rows if r["section"] == "recent"}
    assert "theirs" not in recent and len(recent) == 15  # every event of acme's, none of globex's


def test_exports_follow_a_custom_range_and_every_filter(api, client, org, key, make_user, traffic):
    user = make_user("ann", org=org)
    client.force_login(user)
    first, last = (traffic - timedelta(days=4)).date(), (traffic - timedelta(days=1)).date()
    hold = api.post(
        "/v1/budget/reservations",
        json={"estimated_cost_usd": "0.5", "team": "search", "user": "alice", "model": "gpt-4o"},
        headers=auth(key),
    ).json()["reservation_id"]
    chosen = {
        "range": "custom",
        "from": first.isoformat(),
        "to": last.isoformat(),
        "team": "search",
        "user": "alice",
        "model": "gpt-4o",
    }

    exported = client.get(EXPORT, {"format": "json", **chosen})
    table = csv_table(client.get(EXPORT, {"format": "csv", **chosen}))
    shown = api.get(SUMMARY, params=chosen, headers=cookie_header(user))

    assert exported.status_code == 200, exported.content
    assert exported["Content-Disposition"] == (
        f'attachment; filename="tollgate-acme-custom-{first}-{last}-search-alice-gpt-4o.json"'
    )
    body = exported.json()
    assert {k: v for k, v in body.items() if k not in VOLATILE} == {
        k: v for k, v in shown.json().items() if k not in VOLATILE
    }
    events = RequestEvent.objects.filter(
        org=org,
        team__slug="search",
        user__external_id="alice",
        model="gpt-4o",
        started_at__gte=datetime.combine(first, datetime.min.time(), tzinfo=UTC),
        started_at__lt=datetime.combine(last, datetime.min.time(), tzinfo=UTC) + timedelta(days=1),
    )
    assert events.count() > 0
    assert Decimal(body["kpis"]["spend_usd"]) == events.aggregate(s=Sum("cost_usd"))["s"]
    assert sorted(r["id"] for r in body["recent"]) == sorted(e.event_id for e in events)
    kpi = {r["metric"]: r["value"] for r in table if r["section"] == "kpi"}
    assert kpi["spend_usd"] == body["kpis"]["spend_usd"]
    holds = {
        (r["subject"], r["metric"]): r["value"] for r in table if r["section"] in ("holds", "hold")
    }
    assert holds[("", "count")] == "1" and holds[("", "held_usd")] == "0.5"
    assert holds[(hold, "held_usd")] == "0.5" and holds[(hold, "team")] == "search"


def test_members_see_only_their_org_and_staff_follow_the_switcher(client, org, make_user, traffic):
    client.force_login(make_user("ann", org=org))
    refused = client.get(EXPORT, {"format": "json", "org": "globex"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"

    client.force_login(make_user("root", staff=True))
    theirs = client.get(EXPORT, {"format": "json", "org": "globex"}).json()
    assert theirs["org"]["slug"] == "globex" and Decimal(theirs["kpis"]["spend_usd"]) == 999
    # Without `org`, staff get the org they last viewed on the page.
    assert client.get("/", {"org": "acme"}).status_code == 200
    assert client.get(EXPORT, {"format": "json"}).json()["org"]["slug"] == "acme"


@pytest.mark.parametrize(
    ("query", "status", "code", "field"),
    [
        ({"format": "xlsx"}, 422, "invalid_field", "format"),
        ({"range": "1y"}, 422, "invalid_field", "range"),
        ({"team": "x" * 200}, 422, "invalid_field", "team"),
        ({"team": "nobody"}, 404, "not_found", "team"),
        ({"range": "custom", "to": "2026-01-01"}, 422, "invalid_field", "from"),
        ({"range": "custom", "from": "2026-01-02", "to": "2026-01-01"}, 422, "invalid_field", "to"),
        ({"user": "nobody"}, 404, "not_found", "user"),
    ],
)
def test_bad_parameters_get_a_clear_error(client, org, make_user, query, status, code, field):
    client.force_login(make_user("ann", org=org))

    response = client.get(EXPORT, query)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


def test_an_api_key_is_not_a_session(api, org, key):
    response = api.get(EXPORT, params={"format": "csv"}, headers=auth(key))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
