"""Forecasts (budgets/sql/functions/25_forecasts.sql): the profile the worker
computes from the hourly rollups, the projection GET /v1/budgets shows, and
the "projected to exceed" alert, once per window.

The profile here is simple enough to work out by hand: in the four weeks
before Wednesday 2026-11-18 12:30 UTC, every weekday hour from 09:00 to 17:00
cost $1.50 for team search and $0.50 for team ads, and nothing else cost
anything. So the org spends $2 an hour in working hours; from Wednesday 12:30
to the end of the ISO week (Monday 00:00) that is half of the 12:00 hour and
4 more hours on Wednesday, then 8 hours each on Thursday and Friday: 20.5
hours, $41.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from budgets.models import Alert, BudgetForecast, BudgetWindow, Team
from budgets.services import alert_payload, alerts_raise_projected, forecasts_refresh
from tests.conftest import auth
from tracking.models import HourlyRollup

AT = datetime(2026, 11, 18, 12, 30, tzinfo=UTC)  # a Wednesday
WEEK_START = datetime(2026, 11, 16, tzinfo=UTC)
WEEK_END = datetime(2026, 11, 23, tzinfo=UTC)


def working_hours(start: datetime, end: datetime):
    hour = start
    while hour < end:
        if hour.weekday() < 5 and 9 <= hour.hour < 17:
            yield hour
        hour += timedelta(hours=1)


def seed_rollups(org, team_costs: dict[str, str], start: datetime, end: datetime) -> None:

    rows = []
    for slug, cost in team_costs.items():
        team = Team.objects.get_or_create(org=org, slug=slug)[0]
        rows += [
            HourlyRollup(org=org, team=team, model="gpt-4o", hour=hour, cost_usd=Decimal(cost))
            for hour in working_hours(start, end)
        ]
    HourlyRollup.objects.bulk_create(rows)


def open_window(budget, spent: str, reserved: str = "0", start=WEEK_START, end=WEEK_END):
    return BudgetWindow.objects.create(
        budget=budget,
        period_start=start,
        period_end=end,
        spent=Decimal(spent),
        reserved=Decimal(reserved),
    )


def open_total_window(budget, spent: str) -> None:
    open_window(
        budget,
        spent,
        start=datetime(1970, 1, 1, tzinfo=UTC),
        end=datetime(9999, 12, 31, tzinfo=UTC),
    )


def listed(org, at=AT) -> dict[tuple[str, str, str], dict]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tollgate_list_budgets(%s, %s)", [org.pk, at])
        budgets = json.loads(cursor.fetchone()[0])
    return {(b["scope"], b["id"], b["period"]): b for b in budgets}


@pytest.fixture
def four_weeks(org):
    org.time_zone = "UTC"
    org.save(update_fields=["time_zone"])
    hour = AT.replace(minute=0)
    seed_rollups(org, {"search": "1.5", "ads": "0.5"}, hour - timedelta(weeks=4), hour)
    return org


def test_the_hour_of_week_profile_projects_the_exact_end_and_run_out(four_weeks, make_budget):
    org = four_weeks
    week = make_budget(org, "100", period="week")
    open_window(week, spent="60", reserved="5")
    team = make_budget(org, "50", scope="team", team="search", period="week")
    open_window(team, spent="20")
    month = make_budget(org, "1000", period="month")
    open_window(
        month, "65", start=datetime(2026, 11, 1, tzinfo=UTC), end=datetime(2026, 12, 1, tzinfo=UTC)
    )
    total = make_budget(org, "100", period="total")
    open_total_window(total, "65")

    assert forecasts_refresh(at=AT) == 4
    profile = BudgetForecast.objects.get(budget=week)
    assert (profile.basis, profile.weeks, profile.history_hours) == ("hour_of_week", 4, 672)
    assert profile.hourly_usd[2 * 24 + 9] == Decimal(2)  # Wednesday 09:00
    assert profile.hourly_usd[5 * 24 + 9] == 0  # Saturday
    assert profile.cumulative_usd[168] == Decimal(80)  # 5 days x 8 hours x $2

    budgets = listed(org)
    # $60 spent + $5 held + $41 to come; $35 left of the limit: $9 on
    # Wednesday, $16 on Thursday, then 5 hours of Friday.
    assert budgets["org", "acme", "week"]["projected_usd"] == "106"
    assert budgets["org", "acme", "week"]["runs_out_at"] == "2026-11-20T14:00:00Z"
    assert budgets["org", "acme", "week"]["forecast"] == {
        "basis": "hour_of_week",
        "weeks": 4,
        "history_hours": 672,
        "as_of": "2026-11-18T12:00:00Z",
    }
    # Search alone: $1.50 an hour, $30.75 to come; $30 left runs out 7.5
    # hours into Friday's working day.
    assert budgets["team", "search", "week"]["projected_usd"] == "50.75"
    assert budgets["team", "search", "week"]["runs_out_at"] == "2026-11-20T16:30:00Z"
    # The month: Wednesday's $9, Thursday and Friday, a whole week, Monday 30th.
    assert budgets["org", "acme", "month"]["projected_usd"] == str(65 + 9 + 32 + 80 + 16)
    assert budgets["org", "acme", "month"]["runs_out_at"] is None
    # A total budget has no end to project to, but runs out all the same.
    assert budgets["org", "acme", "total"]["projected_usd"] is None
    assert budgets["org", "acme", "total"]["runs_out_at"] == "2026-11-20T14:00:00Z"


def test_run_out_goes_round_the_week_and_stops_at_the_window_end(four_weeks, make_budget):
    org = four_weeks
    total = make_budget(org, "265", period="total")  # $200 to go: 2.5 weeks of $80
    open_total_window(total, "65")
    forecasts_refresh(at=AT)
    # $41 to the end of this week, $80 the next, $79 more: Friday 16:30 of
    # the week after (39.5 hours of $2 into it).
    assert listed(org)["org", "acme", "total"]["runs_out_at"] == "2026-12-04T16:30:00Z"


def test_a_budget_already_out_runs_out_now_and_one_with_no_spend_never(four_weeks, make_budget):
    org = four_weeks
    out = make_budget(org, "10", period="week")
    open_window(out, spent="10")
    idle = make_budget(org, "10", scope="team", team="quiet", period="week")
    forecasts_refresh(at=AT)
    budgets = listed(org)
    assert budgets["org", "acme", "week"]["runs_out_at"] == "2026-11-18T12:30:00Z"
    assert (
        budgets["team", "quiet", "week"]["projected_usd"],
        budgets["team", "quiet", "week"]["runs_out_at"],
    ) == ("0", None)
    assert BudgetForecast.objects.get(budget=idle).cumulative_usd[168] == 0


def test_short_history_uses_the_flat_rate_of_the_recent_hours(org, make_budget):
    org.time_zone = "UTC"
    org.save(update_fields=["time_zone"])
    # Ten hours of history ($1, then $2, ...): the flat rate is $5.50 an hour.

    team = Team.objects.create(org=org, slug="search")
    HourlyRollup.objects.bulk_create(
        HourlyRollup(
            org=org,
            team=team,
            model="m",
            hour=AT.replace(minute=0) - timedelta(hours=h),
            cost_usd=Decimal(11 - h),
        )
        for h in range(1, 11)
    )
    day = make_budget(org, "100", period="day")
    open_window(
        day,
        spent="55",
        start=AT.replace(hour=0, minute=0),
        end=AT.replace(hour=0, minute=0) + timedelta(days=1),
    )
    forecasts_refresh(at=AT)
    budget = listed(org)["org", "acme", "day"]
    assert budget["forecast"] == {
        "basis": "recent_rate",
        "weeks": 0,
        "history_hours": 10,
        "as_of": "2026-11-18T12:00:00Z",
    }
    # 11.5 hours left at $5.50; $45 left lasts 8 h 10 m 54.5 s.
    assert budget["projected_usd"] == "118.25"
    assert budget["runs_out_at"] == "2026-11-18T20:40:54Z"


def test_budgets_without_a_profile_show_null_forecasts(org, make_budget):
    make_budget(org, "10", period="week")
    assert forecasts_refresh(at=AT) == 0  # no history at all
    budget = listed(org)["org", "acme", "week"]
    assert (budget["projected_usd"], budget["runs_out_at"], budget["forecast"]) == (
        None,
        None,
        None,
    )


def test_projected_to_exceed_alerts_once_per_window(four_weeks, make_budget):
    org = four_weeks
    week = make_budget(org, "100", period="week")
    window = open_window(week, spent="60", reserved="5")
    month = make_budget(org, "1000", period="month")
    open_window(
        month, "65", start=datetime(2026, 11, 1, tzinfo=UTC), end=datetime(2026, 12, 1, tzinfo=UTC)
    )
    forecasts_refresh(at=AT)

    assert alerts_raise_projected(at=AT) == 1
    assert alerts_raise_projected(at=AT + timedelta(minutes=5)) == 0
    alert = Alert.objects.get()
    assert (alert.kind, alert.budget, alert.window) == ("projected", week, window)
    assert (alert.limit_usd, alert.used_usd, alert.projected_usd) == (100, 65, 106)
    assert alert.runs_out_at == datetime(2026, 11, 20, 14, tzinfo=UTC)
    window.refresh_from_db()
    assert window.projected_alerted

    body = alert_payload(alert)
    assert body["alert"]["projected_usd"] == "106"
    assert body["alert"]["runs_out_at"] == "2026-11-20T14:00:00+00:00"
    assert (
        "org budget 'acme' (week) of acme is projected to exceed its limit of $100.00 in the "
        "window 2026-11-16 00:00 UTC to 2026-11-23 00:00 UTC: $106.00 by its end at the usual "
        "rate, running out at 2026-11-20 14:00 UTC ($65.00 spent and held at "
    ) in body["text"]


def test_no_projected_alert_once_the_limit_is_reached(four_weeks, make_budget):
    org = four_weeks
    open_window(make_budget(org, "100", period="week"), spent="100")
    forecasts_refresh(at=AT)
    assert alerts_raise_projected(at=AT) == 0


def test_get_budgets_carries_the_forecast(api, org, admin_key, make_budget):
    now = datetime.now(UTC)

    team = Team.objects.create(org=org, slug="search")
    HourlyRollup.objects.bulk_create(
        HourlyRollup(
            org=org,
            team=team,
            model="m",
            cost_usd=Decimal("1"),
            hour=now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=h),
        )
        for h in range(1, 5)
    )
    make_budget(org, "1000", period="month")
    forecasts_refresh()

    response = api.get("/v1/budgets", headers=auth(admin_key))
    assert response.status_code == 200
    (budget,) = response.json()["budgets"]
    assert budget["forecast"]["basis"] == "recent_rate"
    assert budget["forecast"]["history_hours"] == 4
    assert Decimal(budget["projected_usd"]) > 0  # $1 an hour until the month ends
    assert budget["runs_out_at"] is None


def test_the_dashboard_shows_the_forecast_and_the_projected_alert(four_weeks, make_budget):
    org = four_weeks
    open_window(make_budget(org, "100", period="week"), spent="60", reserved="5")
    forecasts_refresh(at=AT)
    alerts_raise_projected(at=AT)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_dashboard_summary(%s, 'UTC', '7d', NULL, NULL, NULL, NULL, NULL, "
            "NULL, NULL, %s)",
            [org.pk, AT],
        )
        summary = json.loads(cursor.fetchone()[0])["summary"]
    (budget,) = summary["budgets"]
    assert (budget["projected_usd"], budget["runs_out_at"]) == ("106", "2026-11-20T14:00:00Z")
    (alert,) = summary["alerts"]
    assert alert["kind"] == "projected"
    assert alert["message"] == (
        "org budget acme (week of Nov 16) is projected to exceed its limit of $100.00: "
        "$106.00 by the end, running out Nov 20 14:00"
    )


def test_a_total_budget_alerts_when_it_runs_out_within_a_week(four_weeks, make_budget):
    org = four_weeks
    soon = make_budget(org, "100", period="total")
    open_total_window(soon, "65")  # runs out Friday
    later = make_budget(org, "500", scope="team", team="search", period="total")
    open_total_window(later, "0")  # $1.50 an hour of working time: weeks away
    forecasts_refresh(at=AT)
    assert alerts_raise_projected(at=AT) == 1
    alert = Alert.objects.get()
    assert (alert.budget, alert.projected_usd) == (soon, None)
    assert (
        "org budget 'acme' (total) of acme is projected to run out of its limit of $100.00: "
        "at the usual rate at 2026-11-20 14:00 UTC ($65.00 spent and held at "
    ) in alert_payload(alert)["text"]


def test_the_worker_job_forecasts_and_delivers_the_alert(org, make_budget, loopback_webhooks):
    from budgets import jobs
    from tests.budgets.test_alerts import Receiver

    receiver = Receiver()
    try:
        org.webhook_url = receiver.url
        org.save(update_fields=["webhook_url"])
        now = datetime.now(UTC)
        hour = now.replace(minute=0, second=0, microsecond=0)
        team = Team.objects.create(org=org, slug="search")
        HourlyRollup.objects.bulk_create(
            HourlyRollup(
                org=org,
                team=team,
                model="m",
                hour=hour - h * timedelta(hours=1),
                cost_usd=Decimal(1),
            )
            for h in range(1, 4)
        )
        # $1 an hour, $5 left: runs out in five hours, long before the total
        # budget's window ends; an alert within 7 days.
        budget = make_budget(org, "10", scope="team", team="search", period="total")
        open_total_window(budget, "5")

        assert jobs.forecast_budgets() == "1 forecasts refreshed, 1 projected-to-exceed alerts"
        assert jobs.forecast_budgets() == ""  # fresh profiles, and once per window
        assert jobs.deliver_alerts().startswith("1 delivered")
        (body,) = receiver.bodies
        assert body["alert"]["kind"] == "projected"
        assert body["alert"]["subject"] == "search"
        runs_out = datetime.fromisoformat(body["alert"]["runs_out_at"])
        assert abs(runs_out - (now + timedelta(hours=5))) < timedelta(minutes=1)
    finally:
        receiver.server.shutdown()


def test_tag_key_and_model_filtered_budgets_project_only_their_own_spend(
    four_weeks, make_budget, make_key
):
    """Each budget's profile is its own spend: the search team's model-filtered
    budget sees only its model, a key budget its key's rollups, a tag budget
    the raw events carrying its tag (none of them the org's $2 an hour)."""
    from budgets.models import ApiKey, Budget
    from tracking.models import KeyRollup, RequestEvent

    org = four_weeks
    search = Team.objects.get(org=org, slug="search")
    opus = make_budget(org, "100", scope="team", team="search", period="week")
    Budget.objects.filter(pk=opus.pk).update(model_filter="claude-opus-*")
    gpt = Budget.objects.create(
        org=org, scope="team", team=search, period="week", model_filter="gpt-4o",
        limit_usd=Decimal("100"),
    )  # fmt: skip
    key = ApiKey.objects.get(lookup_id=make_key(org).split("_")[1])
    key_budget = Budget.objects.create(
        org=org, scope="key", key=key, period="week", limit_usd=Decimal("100")
    )
    tag_budget = Budget.objects.create(
        org=org, scope="tag", tag="customer=acme", period="week", limit_usd=Decimal("100")
    )
    # $0.25 an hour on the key, and one tagged $3 event a working hour.
    now_hour = AT.replace(minute=0)
    KeyRollup.objects.bulk_create(
        KeyRollup(org=org, key=key, model="gpt-4o", hour=hour, cost_usd=Decimal("0.25"))
        for hour in working_hours(now_hour - timedelta(weeks=4), now_hour)
    )
    RequestEvent.objects.bulk_create(
        RequestEvent(
            org=org,
            event_id=f"e{n}",
            model="gpt-4o",
            provider="openai",
            started_at=hour + timedelta(minutes=5),
            cost_usd=Decimal("3"),
            tags={"customer": "acme", "feature": "faq"},
            payload_hash="x",
            priced=True,
        )
        for n, hour in enumerate(working_hours(now_hour - timedelta(weeks=4), now_hour))
    )
    for budget in (opus, gpt, key_budget, tag_budget):
        open_window(budget, "0")

    forecasts_refresh(at=AT)

    with connection.cursor() as cursor:
        cursor.execute("SELECT tollgate_list_budgets(%s, %s)", [org.pk, AT])
        budgets = json.loads(cursor.fetchone()[0])
    projected = {
        b["id"] + (f"?{b['model']}" if b["model"] else ""): b["projected_usd"]
        for b in budgets
        if b["period"] == "week"
    }
    # 20.5 working hours left in the week (the module's docstring).
    assert projected["search?claude-opus-*"] == "0"
    assert projected["search?gpt-4o"] == str(Decimal("1.5") * Decimal("20.5"))
    assert projected[key.lookup_id] == str(Decimal("0.25") * Decimal("20.5"))
    assert projected["customer=acme"] == str(Decimal("3") * Decimal("20.5"))
