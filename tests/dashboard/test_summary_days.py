"""The dashboard summary read from daily rollups: for every range (last month
and a custom one included), filter and time zone (DST days and half-hour offsets too), the same answer as from
hourly rollups alone, and the same numbers as a direct sum over the raw
events, with events after the watermark in today, in an old day and in the
day that the trailing week starts in."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from budgets.models import EndUser, Organization, Team
from dashboard.api import RANGES
from tests.conftest import auth
from tests.dashboard.conftest import SUMMARY, event, record
from tests.dashboard.test_summary import assert_matches_database, traffic
from tracking.models import DailyRollup, DailyRollupZone, RequestEvent
from tracking.services import daily_rollups_build, rollups_refresh

TEAMS = ("search", "support", "research")
USERS = ("alice", "bob", "carol", None)
MODELS = ("gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro", "o4-mini")
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def local_midnight(moment: datetime, zone: ZoneInfo, days_back: int = 0) -> datetime:
    day = moment.astimezone(zone).date() - timedelta(days=days_back)
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def month_start(moment: datetime, zone: ZoneInfo) -> datetime:
    day = moment.astimezone(zone).date().replace(day=1)
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def add_events(org: Organization, rng: random.Random, at: datetime, count: int, **fields) -> None:
    """Events spread over the 45 days before `at` and a day after it (which no
    range shows), inserted as ingest stores them."""
    teams = {slug: Team.objects.get_or_create(org=org, slug=slug)[0] for slug in TEAMS}
    users = {u: EndUser.objects.get_or_create(org=org, external_id=u)[0] for u in USERS if u}
    events = []
    for i in range(count):
        unpriced = rng.random() < 0.05
        events.append(
            RequestEvent(
                org=org,
                event_id=f"{fields.get('received_at', 'x')}-{rng.random()}-{i}",
                team=teams[rng.choice(TEAMS)] if rng.random() < 0.9 else None,
                user=users.get(rng.choice(USERS)),
                model=rng.choice(MODELS),
                started_at=at - timedelta(hours=rng.uniform(-24, 45 * 24)),
                cost_usd=Decimal(0) if unpriced else Decimal(rng.randrange(10**11)) / 10**10,
                priced=not unpriced,
                status="error" if rng.random() < 0.1 else "ok",
                payload_hash="0" * 64,
                **fields,
            )
        )
    RequestEvent.objects.bulk_create(events)


def tail_event(org: Organization, event_id: str, started_at: datetime, cost: str) -> None:
    """An event received now, after the aggregation watermark."""
    RequestEvent.objects.create(
        org=org,
        event_id=event_id,
        team=Team.objects.get(org=org, slug="search"),
        user=EndUser.objects.get(org=org, external_id="alice"),
        model="gpt-4o",
        started_at=started_at,
        cost_usd=Decimal(cost),
        priced=True,
        payload_hash="0" * 64,
    )


# The filters each range is checked with: none, a team, a user and a model.
FILTERS = [{}, {"team": "search"}, {"user": "alice", "model": "gpt-4o"}]


def custom_days(org: Organization, at: datetime) -> tuple[date, date]:
    """A custom range of nine local days that ended four days before `at`."""
    today = at.astimezone(ZoneInfo(org.time_zone)).date()
    return today - timedelta(days=12), today - timedelta(days=4)


def summary_at(
    org: Organization, range_: str, team: str | None = None, *, at: datetime, **filters: str
) -> dict:
    """Both halves of GET /v1/dashboard/summary, computed for the moment `at`,
    without the snapshots they read (which differ between any two calls)."""
    days = custom_days(org, at) if range_ == "custom" else (None, None)
    args = [
        org.id,
        org.time_zone,
        range_,
        *days,
        team,
        filters.get("user"),
        filters.get("model"),
        None,  # no tag filter
        None,
        at,
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_dashboard_summary(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s), "
            "tollgate_dashboard_breakdown(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            args + args,
        )
        summary, breakdown = (json.loads(v) if isinstance(v, str) else v for v in cursor.fetchone())
    body = {**summary["summary"], **breakdown}
    assert body.pop("snapshot") == body.pop("chart_snapshot")  # one statement here
    return body


def expected(
    org: Organization, range_: str, team: str | None = None, *, at: datetime, **filters: str
) -> dict:
    """The KPIs, chart totals and top lists summed in Python over raw events.
    An event counts in the local day that its UTC hour starts in (the rule of
    the rollups; the same as its own local day where offsets are whole hours)."""
    zone = ZoneInfo(org.time_zone)
    hi = hour_of(at) + timedelta(hours=1)
    today = local_midnight(at, zone)
    month = month_start(at, zone)
    week = hour_of(at) - timedelta(days=7)
    first, last = custom_days(org, at)
    last_month = (month.astimezone(zone) - timedelta(days=1)).date()
    range_from, range_to = {
        "24h": (hi - timedelta(hours=24), hi),
        "7d": (local_midnight(at, zone, 6), hi),
        "30d": (local_midnight(at, zone, 29), hi),
        "mtd": (month, hi),
        "last_month": (month_start(month - timedelta(days=1), zone), month),
        "custom": (
            datetime.combine(first, time(0), tzinfo=zone).astimezone(UTC),
            datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC),
        ),
    }[range_]
    assert last_month.day >= 28
    events = RequestEvent.objects.filter(org=org).select_related("team", "user")
    if team is not None:
        events = events.filter(team__slug=team)
    if "user" in filters:
        events = events.filter(user__external_id=filters["user"])
    if "model" in filters:
        events = events.filter(model=filters["model"])
    sums: dict[str, Decimal] = defaultdict(Decimal)
    counts: dict[str, int] = defaultdict(int)
    chart: dict[str, Decimal] = defaultdict(Decimal)
    tops: dict[str, dict] = {k: defaultdict(Decimal) for k in ("teams", "users", "models")}
    for e in events:
        hour = hour_of(e.started_at)
        if hour >= hi:
            continue
        for name, since in (("today", today), ("mtd", month), ("week", week)):
            if hour >= since:
                sums[name] += e.cost_usd
        if hour < range_from or hour >= range_to:
            continue
        sums["spend"] += e.cost_usd
        counts["requests"] += 1
        counts["errors"] += e.status == "error"
        counts["unpriced"] += not e.priced
        bucket = hour if range_ == "24h" else local_midnight(hour, zone)
        chart[bucket.strftime("%Y-%m-%dT%H:%M:%SZ")] += e.cost_usd
        tops["teams"][e.team.slug if e.team else None] += e.cost_usd
        tops["users"][e.user.external_id if e.user else None] += e.cost_usd
        tops["models"][e.model] += e.cost_usd
    return {
        "from": range_from.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "spend": sums["spend"],
        "today": sums["today"],
        "mtd": sums["mtd"],
        "run_rate": round(sums["week"] / 168, 10),
        **counts,
        "chart": dict(chart),
        "tops": {k: dict(v) for k, v in tops.items()},
    }


def assert_equals_raw_sums(body: dict, want: dict) -> None:
    kpis = body["kpis"]
    assert body["from"] == want["from"]
    assert Decimal(kpis["spend_usd"]) == want["spend"]
    assert Decimal(kpis["today_usd"]) == want["today"]
    assert Decimal(kpis["month_to_date_usd"]) == want["mtd"]
    assert Decimal(kpis["run_rate_usd_per_hour"]) == want["run_rate"]
    assert kpis["requests"] == want["requests"]
    assert kpis["errors"] == want["errors"]
    assert kpis["unpriced_requests"] == want["unpriced"]
    chart = body["chart"]
    per_bucket = {
        bucket: sum(Decimal(s["values"][i]) for s in chart["series"])
        for i, bucket in enumerate(chart["buckets"])
    }
    assert {b: v for b, v in per_bucket.items() if v} == {
        b: v for b, v in want["chart"].items() if v
    }
    assert set(want["chart"]) <= set(chart["buckets"])
    for name, top in body["top"].items():
        largest = sorted(want["tops"][name].values(), reverse=True)[:10]
        assert [Decimal(t["spend_usd"]) for t in top] == largest
        assert all(want["tops"][name][t["id"]] == Decimal(t["spend_usd"]) for t in top)


# (time zone, the moment the dashboard is looked at)
MOMENTS = [
    pytest.param("Europe/Berlin", datetime(2026, 3, 29, 15, 20, tzinfo=UTC), id="berlin-23h-today"),
    pytest.param("Europe/Berlin", datetime(2026, 3, 31, 9, 5, tzinfo=UTC), id="berlin-23h-past"),
    pytest.param("Europe/Berlin", datetime(2026, 10, 26, 0, 30, tzinfo=UTC), id="berlin-25h"),
    pytest.param("America/New_York", datetime(2026, 11, 1, 12, 0, tzinfo=UTC), id="new-york-25h"),
    pytest.param("Asia/Kolkata", datetime(2026, 6, 15, 19, 10, tzinfo=UTC), id="kolkata-0530"),
    pytest.param("Australia/Lord_Howe", datetime(2026, 10, 5, 3, 0, tzinfo=UTC), id="lord-howe"),
    # Midnight twice: Havana's 1 Nov 2026 starts at the first 00:00 (04:00Z)
    # and is also the first day of a month; the day after it is over.
    pytest.param("America/Havana", datetime(2026, 11, 1, 4, 30, tzinfo=UTC), id="havana-00-twice"),
    pytest.param("America/Havana", datetime(2026, 11, 3, 12, 0, tzinfo=UTC), id="havana-25h-past"),
    # Midnight skipped: Havana's 8 Mar, Santiago's 6 Sep (days start at 01:00).
    pytest.param("America/Havana", datetime(2026, 3, 8, 5, 10, tzinfo=UTC), id="havana-no-00"),
    pytest.param("America/Santiago", datetime(2026, 9, 8, 2, 0, tzinfo=UTC), id="santiago-no-00"),
    # 23:00-00:00 twice: Beirut's 24 Oct and Cairo's 29 Oct; Cairo skips 24 Apr's midnight.
    pytest.param("Asia/Beirut", datetime(2026, 10, 25, 21, 30, tzinfo=UTC), id="beirut-23-twice"),
    pytest.param("Africa/Cairo", datetime(2026, 10, 30, 8, 0, tzinfo=UTC), id="cairo-23-twice"),
    pytest.param("Africa/Cairo", datetime(2026, 4, 24, 0, 30, tzinfo=UTC), id="cairo-no-00"),
    pytest.param("UTC", datetime(2026, 5, 31, 23, 15, tzinfo=UTC), id="utc-last-hour-of-month"),
    pytest.param("UTC", datetime(2026, 7, 1, 0, 40, tzinfo=UTC), id="utc-first-hour-of-month"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("time_zone", "at"), MOMENTS)
def test_days_give_the_same_summary_as_hours_and_raw_events(make_org, time_zone, at):
    org = make_org("acme", time_zone=time_zone)
    rng = random.Random(f"{time_zone}{at}")
    add_events(org, rng, at, 1500, received_at=LONG_AGO)
    rollups_refresh()
    assert DailyRollupZone.objects.get(org=org).time_zone == time_zone
    zone = ZoneInfo(time_zone)
    # After the watermark: today, an old day of every range but 24h, and the
    # day that the trailing week (the run rate) starts in.
    tail_event(org, "tail-today", hour_of(at) + timedelta(minutes=1), "1.25")
    tail_event(org, "tail-old", local_midnight(at, zone, 3) + timedelta(hours=5), "2.5")
    tail_event(org, "tail-week", hour_of(at) - timedelta(days=7, minutes=-2), "4")

    for range_ in RANGES:
        for filters in FILTERS:
            from_days = summary_at(org, range_, at=at, **filters)
            assert_equals_raw_sums(from_days, expected(org, range_, at=at, **filters))
            DailyRollupZone.objects.filter(org=org).delete()  # hourly rollups only
            from_hours = summary_at(org, range_, at=at, **filters)
            assert from_days == from_hours, (range_, filters)
            daily_rollups_build()


@pytest.mark.django_db
def test_whole_days_are_read_from_the_daily_rollups(make_org):
    """The test above would pass if no day were ever read from the daily
    table. An altered daily row shows it is (for whole days only), and that
    an event after the watermark in that day adds to the row."""
    org = make_org("acme", time_zone="Europe/Berlin")
    at = datetime(2026, 4, 20, 13, 0, tzinfo=UTC)
    add_events(org, random.Random(1), at, 800, received_at=LONG_AGO)
    rollups_refresh()
    zone = ZoneInfo("Europe/Berlin")
    day = local_midnight(at, zone, 3)
    exact = summary_at(org, "7d", at=at)["kpis"]["spend_usd"]
    assert DailyRollup.objects.filter(org=org, day=day).update(cost_usd=0) > 0

    altered = summary_at(org, "7d", at=at)["kpis"]["spend_usd"]
    hourly = summary_at(org, "24h", at=at)["chart"]

    assert Decimal(altered) < Decimal(exact)
    tail_event(org, "late", day + timedelta(hours=2), "0.75")
    late = summary_at(org, "7d", at=at)["kpis"]["spend_usd"]
    assert Decimal(late) == Decimal(altered) + Decimal("0.75")
    assert summary_at(org, "24h", at=at)["chart"] == hourly


def test_summary_through_the_server_after_aggregate_usage(api, org, key):
    """The first summary test of test_summary.py, with rollups that
    aggregate_usage built (daily ones included) instead of raw events."""
    now = datetime.now(UTC)
    record(api, key, traffic(now, count=150))
    rollups_refresh(lag=timedelta(0))
    assert DailyRollup.objects.filter(org=org).exists()
    record(api, key, [event("tail-1", cost="0.5", started_at=now - timedelta(days=2))])

    response = api.get(SUMMARY, params={"range": "7d"}, headers=auth(key))

    assert response.status_code == 200, response.text
    assert_matches_database(response.json(), org, now)
    for range_ in RANGES:
        params = {"range": range_}
        if range_ == "custom":
            first, last = custom_days(org, now)
            params.update({"from": first.isoformat(), "to": last.isoformat()})
        body = api.get(SUMMARY, params=params, headers=auth(key)).json()
        want = expected(org, range_, at=datetime.fromisoformat(body["generated_at"]))
        assert_equals_raw_sums(body, want)
