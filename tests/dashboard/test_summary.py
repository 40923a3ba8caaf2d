"""GET /v1/dashboard/summary through the real server: its numbers are the
database's, whether hours come from rollups or raw events; who may see which
organization (API key or session); and its input validation."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Count, Q, Sum

from budgets.models import Alert, BudgetWindow
from tests.conftest import assert_error, auth
from tests.dashboard.conftest import (
    SUMMARY,
    build_rollups,
    cookie_header,
    event,
    record,
)
from tracking.models import Price, RequestEvent

TEAMS = ("search", "support", "research")
MODELS = ("gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro")


def day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def traffic(now: datetime, count: int = 60) -> list[dict]:
    """Events over the last nine days: several teams, users and models, some
    failed, some with a model that has no price (stored unpriced, cost 0)."""
    events = []
    for i in range(count):
        unpriced = i % 13 == 0
        events.append(
            event(
                f"ev-{i}",
                cost=None if unpriced else f"0.{i + 1:02d}25",
                started_at=now - timedelta(hours=i * 3.5 + 0.2),
                team=TEAMS[i % 3],
                user=f"user{i % 5}",
                model="no-such-model" if unpriced else MODELS[i % 3],
                status="error" if i % 7 == 0 else "ok",
            )
        )
    return events


def spend(events, since: datetime) -> Decimal:
    return events.filter(started_at__gte=since).aggregate(s=Sum("cost_usd"))["s"] or Decimal(0)


def assert_matches_database(body: dict, org, now: datetime) -> None:
    """Every number of a 7d summary against the ORM's view of the same rows."""
    events = RequestEvent.objects.filter(org=org)
    today = day_start(now)
    since = today - timedelta(days=6)
    in_range = events.filter(started_at__gte=since)
    kpis = body["kpis"]
    assert body["from"] == since.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert Decimal(kpis["spend_usd"]) == spend(events, since)
    assert Decimal(kpis["today_usd"]) == spend(events, today)
    assert Decimal(kpis["month_to_date_usd"]) == spend(events, today.replace(day=1))
    counts = in_range.aggregate(
        requests=Count("id"),
        errors=Count("id", filter=Q(status="error")),
        unpriced=Count("id", filter=Q(priced=False)),
    )
    assert kpis["requests"] == counts["requests"]
    assert kpis["errors"] == counts["errors"]
    assert kpis["unpriced_requests"] == counts["unpriced"] > 0
    unpriced = (
        in_range.filter(priced=False).values("model").annotate(n=Count("id"), s=Sum("cost_usd"))
    )
    assert Decimal(kpis["unpriced_usd"]) == sum((row["s"] for row in unpriced), Decimal(0))
    assert [
        (m["model"], m["requests"], Decimal(m["cost_usd"])) for m in kpis["unpriced_models"]
    ] == [
        (row["model"], row["n"], row["s"])
        for row in sorted(unpriced, key=lambda row: (-row["s"], row["model"]))
    ]
    assert Decimal(kpis["error_rate_pct"]) == round(
        Decimal(counts["errors"] * 100) / counts["requests"], 2
    )

    by_team = {
        row["team__slug"]: row["s"]
        for row in in_range.values("team__slug").annotate(s=Sum("cost_usd"))
    }
    assert {t["id"]: Decimal(t["spend_usd"]) for t in body["top"]["teams"]} == by_team
    by_model = {
        row["model"]: row["s"] for row in in_range.values("model").annotate(s=Sum("cost_usd"))
    }
    assert {m["id"]: Decimal(m["spend_usd"]) for m in body["top"]["models"]} == by_model

    chart = body["chart"]
    assert chart["split_by"] == "team" and len(chart["buckets"]) == 7
    per_series = {s["key"]: sum(Decimal(v) for v in s["values"]) for s in chart["series"]}
    assert per_series == by_team
    per_day: dict[str, Decimal] = defaultdict(Decimal)
    for row in in_range.values("started_at", "cost_usd"):
        per_day[day_start(row["started_at"]).strftime("%Y-%m-%dT%H:%M:%SZ")] += row["cost_usd"]
    for i, bucket in enumerate(chart["buckets"]):
        assert sum(Decimal(s["values"][i]) for s in chart["series"]) == per_day[bucket]

    # The recent list follows the range like every panel.
    newest = list(in_range.order_by("-started_at").values_list("event_id", flat=True)[:50])
    assert [r["id"] for r in body["recent"]] == newest
    open_alerts = Alert.objects.filter(org=org, acknowledged_at__isnull=True)
    assert [a["id"] for a in body["alerts"]] == list(
        open_alerts.order_by("-created_at", "-id").values_list("id", flat=True)[:20]
    )


def test_summary_numbers_are_the_databases(api, org, key, make_budget):
    # A catalog, so that the unpriced events cost the fallback rate (the
    # others carry their own cost).
    Price.objects.create(
        provider="openai",
        model="gpt-4o",
        input_per_token=Decimal("0.0000025"),
        output_per_token=Decimal("0.00001"),
    )
    make_budget(org, "100", period="month")
    make_budget(org, "0.5", scope="team", team="search", period="day", soft_limit_pct=50)
    now = datetime.now(UTC)
    record(api, key, traffic(now))

    response = api.get(SUMMARY, params={"range": "7d"}, headers=auth(key))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["org"] == {"slug": "acme", "name": "acme", "time_zone": "UTC"}
    assert body["range"] == "7d" and body["granularity"] == "day" and body["team"] is None
    assert sorted(body["teams"]) == sorted(TEAMS)
    assert_matches_database(body, org, now)
    # 100 input x $2.5/M + 20 output x $10/M each.
    unpriced = body["kpis"]["unpriced_models"]
    assert [m["model"] for m in unpriced] == ["no-such-model"]
    assert Decimal(body["kpis"]["unpriced_usd"]) == Decimal("0.00045") * unpriced[0]["requests"]
    budgets = {(b["scope"], b["id"], b["period"]): b for b in body["budgets"]}
    for window in BudgetWindow.objects.filter(budget__org=org, period_end__gt=now):
        b = window.budget
        shown = budgets[(b.scope, b.subject_id, b.period)]
        assert Decimal(shown["spent_usd"]) == window.spent
        assert Decimal(shown["limit_usd"]) == b.limit_usd
        assert shown["resets_at"] == window.period_end.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert shown["used_pct"] == str(round(window.spent * 100 / b.limit_usd, 1))
        assert shown["soft_limit_pct"] == b.soft_limit_pct


def test_alerts_say_when_they_fired_and_an_unpriced_models_alert_is_the_orgs(
    api, org, key, make_budget
):
    Price.objects.create(
        provider="openai",
        model="gpt-4o",
        input_per_token=Decimal("0.0000025"),
        output_per_token=Decimal("0.00001"),
    )
    make_budget(org, "0.5", scope="team", team="search", soft_limit_pct=50)
    record(api, key, [event("first-mystery", cost=None, model="tg-mystery", team="support")])
    record(api, key, [event("big", cost="0.3", team="search")])

    body = api.get(SUMMARY, params={"range": "24h"}, headers=auth(key)).json()

    unpriced, soft = (Alert.objects.get(kind=kind) for kind in ("unpriced_model", "soft"))
    assert [a["id"] for a in body["alerts"]] == [soft.pk, unpriced.pk]  # newest first
    shown = body["alerts"][1]
    assert shown == {
        "id": unpriced.pk,
        "kind": "unpriced_model",
        "scope": None,
        "subject": None,
        "period": None,
        "model": "tg-mystery",
        "created_at": shown["created_at"],
        "limit_usd": None,
        "used_usd": "0.00045",
        "delivery": "skipped",
        # 100 input x $2.5/M + 20 output x $10/M, with enough digits to be non-zero.
        "message": "model tg-mystery has no price: its first use was charged $0.00045",
    }
    assert shown["created_at"] == unpriced.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    day = soft.window.period_start  # the org's zone is UTC
    assert body["alerts"][0]["message"] == (
        f"team budget search (day of {day:%b} {day.day}) reached its soft limit: $0.30 of $0.50"
    )
    # A team's page shows that team's budget alerts, not the org's.
    team_page = api.get(SUMMARY, params={"range": "24h", "team": "search"}, headers=auth(key))
    assert [a["id"] for a in team_page.json()["alerts"]] == [soft.pk]


def test_rollups_count_for_final_hours_and_raw_events_after_the_watermark(api, org, key):
    now = datetime.now(UTC)
    record(api, key, traffic(now))
    build_rollups()
    body = api.get(SUMMARY, headers=auth(key)).json()
    assert_matches_database(body, org, now)

    # An hour that got no event since the watermark is read from its rollup
    # alone: a changed rollup shows (and proves the raw rows were not read).
    hour = (now - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE tracking_hourlyrollup SET cost_usd = cost_usd + 1 WHERE org_id = %s AND hour = "
            "(SELECT min(hour) FROM tracking_hourlyrollup WHERE org_id = %s AND hour >= %s)",
            [org.id, org.id, hour],
        )
        assert cursor.rowcount == 1
    body = api.get(SUMMARY, headers=auth(key)).json()
    exact = spend(RequestEvent.objects.filter(org=org), day_start(now) - timedelta(days=6))
    assert Decimal(body["kpis"]["spend_usd"]) == exact + 1

    # An event that arrives late for that hour, after the watermark, is added
    # to the hour's rollup from the raw tail (the rollup alone stays as it is,
    # altered).
    late = RequestEvent.objects.filter(org=org, started_at__gte=hour).order_by("started_at")[0]
    in_that_hour = late.started_at.replace(minute=0, second=1, microsecond=0)
    record(api, key, [event("late-1", cost="2.5", started_at=in_that_hour)])
    body = api.get(SUMMARY, headers=auth(key)).json()
    assert Decimal(body["kpis"]["spend_usd"]) == exact + 1 + Decimal("2.5")


def test_hourly_range_has_24_buckets_and_month_to_date_starts_on_the_first(api, org, key):
    now = datetime.now(UTC)
    record(api, key, [event("a", cost="1.5", started_at=now - timedelta(minutes=5))])

    hourly = api.get(SUMMARY, params={"range": "24h"}, headers=auth(key)).json()
    monthly = api.get(SUMMARY, params={"range": "mtd"}, headers=auth(key)).json()

    assert hourly["granularity"] == "hour" and len(hourly["chart"]["buckets"]) == 24
    assert hourly["chart"]["buckets"][-1] == now.strftime("%Y-%m-%dT%H:00:00Z")
    assert hourly["kpis"]["spend_usd"] == "1.5"
    assert monthly["from"] == day_start(now).replace(day=1).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(monthly["chart"]["buckets"]) == now.day


def test_days_are_the_orgs_local_days(api, make_org, make_key):
    tokyo = make_org("tokyo", time_zone="Asia/Tokyo")
    key = make_key(tokyo)
    now = datetime.now(UTC)
    record(api, key, [event("a", cost="1", started_at=now - timedelta(seconds=30))])

    body = api.get(SUMMARY, params={"range": "7d"}, headers=auth(key)).json()

    local = now.astimezone(ZoneInfo("Asia/Tokyo"))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    days = [(midnight - timedelta(days=6 - i)).astimezone(UTC) for i in range(7)]
    assert body["chart"]["buckets"] == [d.strftime("%Y-%m-%dT%H:%M:%SZ") for d in days]
    assert body["from"] == body["chart"]["buckets"][0]
    assert body["kpis"]["today_starts_at"] == body["chart"]["buckets"][-1]
    assert body["chart"]["series"][0]["values"][-1] == "1"


def test_team_filter_narrows_everything_and_splits_by_model(api, org, key, make_budget):
    make_budget(org, "100", period="month")
    make_budget(org, "10", scope="team", team="support", period="day")
    now = datetime.now(UTC)
    record(api, key, traffic(now))

    body = api.get(SUMMARY, params={"team": "search"}, headers=auth(key)).json()

    search = RequestEvent.objects.filter(org=org, team__slug="search")
    since = day_start(now) - timedelta(days=6)
    assert body["team"] == "search"
    assert Decimal(body["kpis"]["spend_usd"]) == spend(search, since)
    assert body["chart"]["split_by"] == "model"
    assert {r["team"] for r in body["recent"]} == {"search"}
    assert [t["id"] for t in body["top"]["teams"]] == ["search"]
    # The org's budget counts the team's spend; another team's does not.
    assert [(b["scope"], b["id"]) for b in body["budgets"]] == [("org", "acme")]


# --- who sees what ---------------------------------------------------------------------


def test_another_orgs_key_sees_none_of_this_orgs_data(api, org, key, make_org, make_key):
    record(api, key, [event("secret-1", cost="9.99")])
    other_key = make_key(make_org("globex"))

    body = api.get(SUMMARY, headers=auth(other_key)).json()

    assert body["org"]["slug"] == "globex"
    assert body["recent"] == [] and body["kpis"]["spend_usd"] == "0" and body["teams"] == []
    response = api.get(SUMMARY, params={"org": "acme"}, headers=auth(other_key))
    assert_error(response, 403, "forbidden")


def test_a_teams_name_from_another_org_is_unknown_here(api, org, key, make_org, make_key):
    record(api, key, [event("secret-1", cost="9.99", team="skunkworks")])
    other_key = make_key(make_org("globex"))

    response = api.get(SUMMARY, params={"team": "skunkworks"}, headers=auth(other_key))

    assert_error(response, 404, "not_found", field="team")


def test_team_limited_key_sees_its_team_only(api, org, make_key, key, make_budget):
    make_budget(org, "100", period="month")
    make_budget(org, "10", scope="team", team="search", period="day")
    make_budget(org, "10", scope="team", team="support", period="day")
    record(api, key, [event("s", cost="1", team="search"), event("t", cost="2", team="support")])
    search_key = make_key(org, team="search")

    body = api.get(SUMMARY, headers=auth(search_key)).json()

    assert body["team"] == "search" and body["kpis"]["spend_usd"] == "1"
    assert [r["id"] for r in body["recent"]] == ["s"]
    assert {(b["scope"], b["id"]) for b in body["budgets"]} == {("org", "acme"), ("team", "search")}
    response = api.get(SUMMARY, params={"team": "support"}, headers=auth(search_key))
    assert_error(response, 403, "forbidden", field="team")


def test_member_session_sees_its_org(api, org, key, make_user, make_org):
    record(api, key, [event("mine", cost="3")])
    make_org("globex")
    ann = make_user("ann", org=org)

    response = api.get(SUMMARY, headers=cookie_header(ann))

    assert response.status_code == 200, response.text
    assert response.json()["org"]["slug"] == "acme"
    assert [r["id"] for r in response.json()["recent"]] == ["mine"]
    response = api.get(SUMMARY, params={"org": "globex"}, headers=cookie_header(ann))
    assert_error(response, 403, "forbidden")


def test_login_of_no_org_is_forbidden(api, org, make_user):
    drifter = make_user("drifter")

    assert_error(api.get(SUMMARY, headers=cookie_header(drifter)), 403, "forbidden")


def test_staff_switch_between_orgs(api, org, key, make_user, make_org, make_key):
    record(api, key, [event("acme-1", cost="3")])
    globex = make_org("globex")
    record(api, make_key(globex), [event("globex-1", cost="4")])
    staff = make_user("root", staff=True)

    first = api.get(SUMMARY, headers=cookie_header(staff)).json()
    chosen = api.get(SUMMARY, params={"org": "globex"}, headers=cookie_header(staff)).json()

    assert first["org"]["slug"] == "acme"  # no org of their own: the first one
    assert [r["id"] for r in chosen["recent"]] == ["globex-1"]
    response = api.get(SUMMARY, params={"org": "initech"}, headers=cookie_header(staff))
    assert_error(response, 404, "not_found", field="org")


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param("", id="no-cookie"),
        pytest.param("sessionid=nonsense", id="unknown-session"),
        pytest.param("sessionid=" + "x" * 300, id="oversized"),
        pytest.param("othercookie=1", id="other-cookie"),
        # A quoted cookie may escape a NUL, which PostgreSQL text refuses (was a 500).
        pytest.param('sessionid="\\000abcdefgh"', id="escaped-nul"),
        pytest.param("sessionid=' OR 1=1 --", id="sql"),
    ],
)
def test_without_a_valid_session_or_key_it_is_401(api, org, cookie):
    headers = {"Cookie": cookie} if cookie else {}

    assert_error(api.get(SUMMARY, headers=headers), 401, "unauthenticated")


def test_signing_out_or_changing_the_password_ends_the_session(api, org, make_user):
    ann = make_user("ann", org=org)
    headers = cookie_header(ann)
    assert api.get(SUMMARY, headers=headers).status_code == 200

    ann.set_password("another-password-4471")
    ann.save()
    assert_error(api.get(SUMMARY, headers=headers), 401, "unauthenticated")

    headers = cookie_header(ann)
    User.objects.filter(pk=ann.pk).update(is_active=False)
    assert_error(api.get(SUMMARY, headers=headers), 401, "unauthenticated")


def test_a_wrong_api_key_is_401_even_with_a_session(api, org, make_user):
    ann = make_user("ann", org=org)

    response = api.get(
        SUMMARY, headers={**cookie_header(ann), "Authorization": "Bearer tg_000000000000_nope"}
    )

    assert_error(response, 401, "unauthenticated")


# --- input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"range": "1y"}, "range", id="unknown-range"),
        pytest.param({"range": "24H"}, "range", id="range-case"),
        pytest.param({"team": "t" * 129}, "team", id="team-too-long"),
        pytest.param({"team": "a\x01b"}, "team", id="team-control-character"),
        pytest.param({"org": "o" * 200}, "org", id="org-too-long"),
    ],
)
def test_invalid_filters_are_422(api, key, params, field):
    response = api.get(SUMMARY, params=params, headers=auth(key))

    assert_error(response, 422, "invalid_field", field=field)


def test_empty_filters_mean_all_teams_and_the_default_range(api, key):
    body = api.get(SUMMARY, params={"team": "", "range": ""}, headers=auth(key)).json()

    assert body["team"] is None and body["range"] == "7d"


def test_unknown_team_is_404(api, key):
    assert_error(
        api.get(SUMMARY, params={"team": "nobody"}, headers=auth(key)), 404, "not_found", "team"
    )


def test_other_methods_are_405(api, key):
    assert_error(api.post(SUMMARY, headers=auth(key)), 405, "method_not_allowed")


def test_an_alert_names_the_window_it_crossed_in(api, org, key, make_budget):
    """Alerts of past periods stay open until acknowledged: each message says
    which period's window crossed, in the org's zone."""
    make_budget(org, "0.5", scope="team", team="search", period="week", soft_limit_pct=50)
    make_budget(org, "0.5", scope="org", period="month", soft_limit_pct=50)
    make_budget(org, "0.5", scope="user", user="alice", period="total", soft_limit_pct=50)
    record(api, key, [event("big", cost="0.3", team="search", user="alice")])

    body = api.get(SUMMARY, params={"range": "24h"}, headers=auth(key)).json()
    messages = {a["period"]: a["message"] for a in body["alerts"]}
    week = Alert.objects.get(budget__period="week").window.period_start
    month = Alert.objects.get(budget__period="month").window.period_start
    assert f"team budget search (week of {week:%b} {week.day}) reached" in messages["week"]
    assert f"org budget {org.slug} ({month:%B %Y}) reached" in messages["month"]
    assert "user budget alice (total) reached its soft limit: $0.30 of $0.50" == messages["total"]
