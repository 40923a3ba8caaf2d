"""GET /v1/dashboard/summary's periods beyond the trailing ones: last month
and a custom range of local days (the `to` day included), in the org's time
zone, and what it refuses."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import assert_error, auth
from tests.dashboard.conftest import SUMMARY, event, record

NEW_YORK = ZoneInfo("America/New_York")


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=NEW_YORK)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def ny(make_org, make_key) -> str:
    """An API key of an org in New York's time zone."""
    return make_key(make_org("nyc", time_zone="America/New_York"))


def test_custom_range_is_whole_local_days_with_the_last_day_included(api, ny):
    key = ny
    today = datetime.now(NEW_YORK).date()
    first, last = today - timedelta(days=9), today - timedelta(days=3)
    record(
        api,
        key,
        [
            event("before", cost="100", started_at=local(first - timedelta(days=1), 23, 30)),
            event("first-day", cost="1.25", started_at=local(first, 0, 30)),
            event("last-day", cost="2.5", started_at=local(last, 23, 30), user="bob"),
            event("after", cost="200", started_at=local(last + timedelta(days=1), 0, 30)),
        ],
    )

    response = api.get(
        SUMMARY,
        params={"range": "custom", "from": first.isoformat(), "to": last.isoformat()},
        headers=auth(key),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["range"] == "custom" and body["granularity"] == "day"
    assert (body["from_date"], body["to_date"]) == (first.isoformat(), last.isoformat())
    start, end = local(first, 0), local(last + timedelta(days=1), 0)
    assert (body["from"], body["to"], body["ends_at"]) == (iso(start), iso(end), iso(end))
    assert body["kpis"]["spend_usd"] == "3.75" and body["kpis"]["requests"] == 2
    assert len(body["chart"]["buckets"]) == 7
    assert body["chart"]["buckets"][0] == iso(start)
    values = body["chart"]["series"][0]["values"]
    assert (values[0], values[-1]) == ("1.25", "2.5")
    assert [r["id"] for r in body["recent"]] == ["last-day", "first-day"]
    assert {u["id"] for u in body["top"]["users"]} == {"alice", "bob"}
    # Today stays today, whatever the range (every event above is older).
    assert body["kpis"]["today_usd"] == "0"


def test_custom_range_reaching_today_takes_live_spend(api, ny):
    key = ny
    today = datetime.now(NEW_YORK).date()
    record(api, key, [event("now", cost="0.5")])

    body = api.get(
        SUMMARY,
        params={"range": "custom", "from": today.isoformat(), "to": today.isoformat()},
        headers=auth(key),
    ).json()

    assert body["ends_at"] is None  # open: live updates belong to it
    assert body["kpis"]["spend_usd"] == "0.5" and body["kpis"]["today_usd"] == "0.5"
    assert body["chart"]["buckets"] == [iso(local(today, 0))]


def test_last_month_is_the_whole_local_month_before_this_one(api, ny):
    key = ny
    now = datetime.now(NEW_YORK)
    this_month = now.date().replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    days = calendar.monthrange(last_month.year, last_month.month)[1]
    record(
        api,
        key,
        [
            event("older", cost="7", started_at=local(last_month - timedelta(days=1), 23, 59)),
            event("first", cost="1", started_at=local(last_month, 0, 1)),
            event("last", cost="2", started_at=local(this_month - timedelta(days=1), 23, 59)),
            event("this", cost="4", started_at=local(this_month, 0, 1)),
        ],
    )

    body = api.get(SUMMARY, params={"range": "last_month"}, headers=auth(key)).json()

    assert body["from"] == iso(local(last_month, 0))
    assert body["to"] == body["ends_at"] == iso(local(this_month, 0))
    assert len(body["chart"]["buckets"]) == days
    assert Decimal(body["kpis"]["spend_usd"]) == 3 and body["kpis"]["requests"] == 2
    assert Decimal(body["kpis"]["month_to_date_usd"]) == 4
    assert [r["id"] for r in body["recent"]] == ["last", "first"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"range": "custom", "to": "2026-01-02"}, "from", id="custom-without-from"),
        pytest.param({"range": "custom", "from": "2026-01-02"}, "to", id="custom-without-to"),
        pytest.param(
            {"range": "custom", "from": "2026-01-03", "to": "2026-01-02"}, "to", id="reversed"
        ),
        pytest.param(
            {"range": "custom", "from": "2025-01-01", "to": "2026-01-02"}, "to", id="367-days"
        ),
        pytest.param({"range": "custom", "from": "2026-02-30", "to": "2026-03-02"}, "from"),
        pytest.param({"range": "custom", "from": "20260101", "to": "2026-03-02"}, "from"),
        pytest.param({"range": "custom", "from": "2026-01-01", "to": "2026-1-2"}, "to"),
        pytest.param({"range": "7d", "from": "2026-01-01"}, "from", id="dates-without-custom"),
        pytest.param({"range": "lastmonth"}, "range"),
        pytest.param({"user": "u" * 200}, "user"),
        pytest.param({"model": "m\x00"}, "model"),
    ],
)
def test_invalid_periods_are_422_naming_the_field(api, key, params, field):
    assert_error(api.get(SUMMARY, params=params, headers=auth(key)), 422, "invalid_field", field)


def test_a_leap_years_span_is_accepted(api, key):
    params = {"range": "custom", "from": "2024-01-01", "to": "2024-12-31"}  # 366 days

    body = api.get(SUMMARY, params=params, headers=auth(key)).json()

    assert len(body["chart"]["buckets"]) == 366 and body["kpis"]["spend_usd"] == "0"
