"""Daily rollups: in each org's local days, always the sum of the hourly
rollups of the hours that start in that day (23 or 25 of them on a DST
change), kept so by aggregate_usage, --rebuild, reprice and a change of time
zone; pruning leaves them alone."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from importlib import import_module
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone

from tests.tracking.conftest import hours_ago, raw_sums, rollups, run
from tests.tracking.test_reprice import make_price
from tracking.models import DailyRollup, DailyRollupZone, HourlyRollup, RequestEvent
from tracking.services import daily_rollups_build, rollups_refresh, rollups_refresh_buckets

# Passes take the events just made.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_lag")]

LONG_AGO = timezone.now() - timedelta(days=400)
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",  # +05:30: local midnight is not a UTC hour
    "Australia/Lord_Howe",  # a DST shift of 30 minutes
    "Pacific/Chatham",  # +12:45 / +13:45
)


def local_day(hour: datetime, time_zone: str) -> datetime:
    """The start (as an instant) of the local day that `hour` starts in."""
    zone = ZoneInfo(time_zone)
    return datetime.combine(hour.astimezone(zone).date(), time(0), tzinfo=zone).astimezone(UTC)


def daily_rows(org_id: int | None = None) -> dict[tuple, tuple]:
    """{(org, day, team, user, model): (requests, errors, unpriced, cost)}."""
    rows = DailyRollup.objects.all() if org_id is None else DailyRollup.objects.filter(org=org_id)
    return {
        (r.org_id, r.day, r.team_id, r.user_id, r.model): (
            r.requests,
            r.errors,
            r.unpriced_requests,
            r.cost_usd,
        )
        for r in rows
    }


def hourly_by_day(org_id: int, time_zone: str) -> dict[tuple, tuple]:
    """The same, summed in Python from the org's hourly rollups."""
    sums: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    for r in HourlyRollup.objects.filter(org=org_id):
        row = sums[(r.org_id, local_day(r.hour, time_zone), r.team_id, r.user_id, r.model)]
        for i, value in enumerate((r.requests, r.errors, r.unpriced_requests, r.cost_usd)):
            row[i] += value
    return {key: tuple(values) for key, values in sums.items()}


def row_versions() -> dict[int, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, xmin::text FROM tracking_dailyrollup")
        return dict(cursor.fetchall())


def random_traffic(
    org, make_event, rng: random.Random, count: int, days: int = 40, received_at=LONG_AGO
) -> None:
    """Events over the last `days`; received long ago, or now with received_at=None."""
    for _ in range(count):
        make_event(
            org,
            team=rng.choice(["search", "support", None]),
            user=rng.choice(["alice", "bob", None]),
            model=rng.choice(["gpt-4o", "claude-sonnet-4", "gemini-2.5-pro"]),
            started_at=hours_ago(rng.randrange(days * 24), minutes=rng.uniform(0, 59.99)),
            received_at=received_at,
            cost=str(Decimal(rng.randrange(10**12)) / 10**10),
            priced=rng.random() > 0.1,
            status="error" if rng.random() < 0.2 else "ok",
        )


@pytest.mark.parametrize(
    ("time_zone", "change", "hours"),
    [
        pytest.param("Europe/Berlin", date(2026, 3, 29), 23, id="berlin-spring"),
        pytest.param("Europe/Berlin", date(2026, 10, 25), 25, id="berlin-autumn"),
        pytest.param("America/New_York", date(2026, 3, 8), 23, id="new-york-spring"),
        pytest.param("America/New_York", date(2026, 11, 1), 25, id="new-york-autumn"),
        pytest.param("Australia/Sydney", date(2026, 10, 4), 23, id="sydney-spring"),
        # Clocks that change at midnight: the day starts at its first instant,
        # the first of two midnights (Havana, November) or 01:00 where
        # midnight is skipped (Havana in March, Santiago in September, Cairo
        # in April); a repeated 23:00-00:00 lengthens the day before.
        pytest.param("America/Havana", date(2026, 11, 1), 25, id="havana-00-twice"),
        pytest.param("America/Havana", date(2026, 3, 8), 23, id="havana-no-00"),
        pytest.param("America/Santiago", date(2026, 9, 6), 23, id="santiago-no-00"),
        pytest.param("America/Santiago", date(2026, 4, 4), 25, id="santiago-23-twice"),
        pytest.param("Asia/Beirut", date(2026, 10, 24), 25, id="beirut-23-twice"),
        pytest.param("Africa/Cairo", date(2026, 4, 24), 23, id="cairo-no-00"),
    ],
)
def test_a_dst_day_sums_its_23_or_25_hours(make_org, make_event, time_zone, change, hours):
    org = make_org(time_zone=time_zone)
    zone = ZoneInfo(time_zone)
    first = datetime.combine(change - timedelta(days=2), time(0), tzinfo=zone).astimezone(UTC)
    last = datetime.combine(change + timedelta(days=3), time(0), tzinfo=zone).astimezone(UTC)
    hour = first
    while hour < last:  # one event in every UTC hour of the five local days
        make_event(org, started_at=hour + timedelta(minutes=30), received_at=LONG_AGO, cost="1")
        hour += timedelta(hours=1)

    run("aggregate_usage")

    per_day = {
        r.day.astimezone(zone).date(): r.requests for r in DailyRollup.objects.filter(org=org)
    }
    assert per_day == {
        change - timedelta(days=2): 24,
        change - timedelta(days=1): 24,
        change: hours,
        change + timedelta(days=1): 24,
        change + timedelta(days=2): 24,
    }
    assert daily_rows() == hourly_by_day(org.id, time_zone)
    # The same days re-summed from their hours (refresh_days, as reprice and
    # a rebuild's batches do), keyed alike.
    DailyRollup.objects.filter(org=org).delete()
    rollups_refresh_buckets(HourlyRollup.objects.filter(org=org).values_list("org_id", "hour"))
    assert daily_rows() == hourly_by_day(org.id, time_zone)


def test_days_equal_the_sum_of_hours_in_every_zone(make_org, make_event):
    rng = random.Random(11)
    orgs = [make_org(time_zone=zone) for zone in ZONES]
    for org in orgs:
        random_traffic(org, make_event, rng, 150)

    output = run("aggregate_usage")

    assert f"Built the daily rollups of {len(orgs)} organization(s)" in output
    for org in orgs:
        assert daily_rows(org.id) == hourly_by_day(org.id, org.time_zone)
        assert sum(r.cost_usd for r in DailyRollup.objects.filter(org=org)) == sum(
            e.cost_usd for e in RequestEvent.objects.filter(org=org)
        )
        assert DailyRollupZone.objects.get(org=org).time_zone == org.time_zone

    # Late events for old days and new ones for today: the next pass re-sums
    # the days of the hours it recomputes, and only those.
    versions = row_versions()
    for org in orgs:
        make_event(org, started_at=hours_ago(24 * 20, minutes=7), cost="2.5")
        make_event(org, started_at=hours_ago(0, minutes=1), cost="0.75", team="growth")
    output = run("aggregate_usage")

    assert "Built the daily rollups" not in output
    for org in orgs:
        assert daily_rows(org.id) == hourly_by_day(org.id, org.time_zone)
    rewritten = {pk for pk, v in row_versions().items() if versions.get(pk) != v}
    late_days = {
        (org.id, local_day(hours_ago(h), org.time_zone)) for org in orgs for h in (24 * 20, 0)
    }
    assert {(r.org_id, r.day) for r in DailyRollup.objects.filter(pk__in=rewritten)} <= late_days
    assert len(rewritten) == 2 * len(orgs)


def test_incremental_passes_add_up_to_what_a_rebuild_computes(make_org, make_event):
    # Each pass adds the events received since the last one to their hours
    # and days; after many passes both equal the raw events, and a rebuild
    # from the raw events finds nothing to change.
    rng = random.Random(5)
    orgs = [make_org(time_zone=zone) for zone in ("Asia/Kolkata", "America/New_York")]
    run("aggregate_usage")  # builds the orgs' days (none yet) and sets the watermark
    for _ in range(5):
        for org in orgs:
            random_traffic(org, make_event, rng, 30, days=3, received_at=None)
        assert rollups_refresh().events == 30 * len(orgs)

    assert rollups() == raw_sums()
    for org in orgs:
        assert daily_rows(org.id) == hourly_by_day(org.id, org.time_zone)
    hours, days, versions = rollups(), daily_rows(), row_versions()
    run("aggregate_usage", "--rebuild", "--since", "2000-01-01")
    assert rollups() == hours and daily_rows() == days
    assert row_versions() == versions  # not even rewritten


def test_rerun_and_rebuild_leave_days_untouched_and_rebuild_repairs_them(make_org, make_event):
    rng = random.Random(3)
    org = make_org(time_zone="America/New_York")
    random_traffic(org, make_event, rng, 120)
    run("aggregate_usage")
    before, versions = daily_rows(), row_versions()

    run("aggregate_usage")
    output = run("aggregate_usage", "--rebuild", "--since", "2000-01-01")

    assert daily_rows() == before
    assert row_versions() == versions  # not even rewritten with equal values
    assert "Built the daily rollups of 1 organization(s)" in output

    # Days gone wrong (a bug, a manual edit): an incremental pass does not
    # look at them again, a rebuild sums them anew.
    first = DailyRollup.objects.order_by("day").first()
    DailyRollup.objects.filter(pk=first.pk).update(cost_usd=Decimal("99"))
    stray = DailyRollup.objects.create(org=org, day=first.day, model="ghost", requests=1)
    run("aggregate_usage")
    assert DailyRollup.objects.filter(cost_usd=Decimal("99")).exists()

    run("aggregate_usage", "--rebuild", "--since", hours_ago(1).isoformat())

    assert daily_rows() == before
    assert not DailyRollup.objects.filter(pk=stray.pk).exists()


def test_a_changed_time_zone_rebuilds_the_orgs_days(make_org, make_event):
    rng = random.Random(5)
    org = make_org(time_zone="Europe/Berlin")
    other = make_org(time_zone="UTC")
    random_traffic(org, make_event, rng, 100)
    random_traffic(other, make_event, rng, 30)
    run("aggregate_usage")
    others_versions = {
        pk: v
        for pk, v in row_versions().items()
        if DailyRollup.objects.filter(pk=pk, org=other).exists()
    }

    org.time_zone = "Asia/Kolkata"
    org.save(update_fields=["time_zone"])
    report = rollups_refresh()

    assert report.day_builds == 1
    assert DailyRollupZone.objects.get(org=org).time_zone == "Asia/Kolkata"
    assert daily_rows(org.id) == hourly_by_day(org.id, "Asia/Kolkata")
    assert all(r.day.minute == 30 for r in DailyRollup.objects.filter(org=org))
    assert {pk: v for pk, v in row_versions().items() if pk in others_versions} == others_versions
    assert daily_rollups_build() == 0


def test_reprice_moves_the_days_with_the_hours(make_org, make_event):
    org = make_org(time_zone="Europe/Berlin")
    for h in (5, 30, 60):
        make_event(
            org,
            model="new-model",
            provider="acme-ai",
            started_at=hours_ago(h),
            received_at=LONG_AGO,
            cost="0",
            priced=False,
            input_tokens=1000,
            output_tokens=500,
        )
    run("aggregate_usage")
    assert sum(r.unpriced_requests for r in DailyRollup.objects.all()) == 3
    make_price(effective_from=LONG_AGO)

    run("reprice", "--since", "2000-01-01")

    assert daily_rows() == hourly_by_day(org.id, org.time_zone)
    assert sum(r.cost_usd for r in DailyRollup.objects.all()) == Decimal("0.006")
    assert sum(r.unpriced_requests for r in DailyRollup.objects.all()) == 0


def test_pruning_raw_events_keeps_the_days(make_org, make_event):
    rng = random.Random(9)
    org = make_org(time_zone="Asia/Kolkata")
    random_traffic(org, make_event, rng, 80)
    run("aggregate_usage")
    before = daily_rows()

    run("prune_events", "--older-than", "10d")
    run("aggregate_usage", "--rebuild", "--since", "2000-01-01")

    assert RequestEvent.objects.count() < 80
    assert daily_rows() == before == hourly_by_day(org.id, org.time_zone)


def test_deleting_a_team_deletes_its_days_with_its_hours(make_org, make_event):
    org = make_org()
    make_event(org, team="search", started_at=hours_ago(3), received_at=LONG_AGO)
    make_event(org, team="support", started_at=hours_ago(3), received_at=LONG_AGO)
    run("aggregate_usage")

    org.teams.get(slug="support").delete()

    assert daily_rows() == hourly_by_day(org.id, "UTC")
    assert DailyRollup.objects.get().requests == 1


def test_the_migration_has_days_keyed_by_a_later_midnight_rebuilt(make_org, make_event):
    """Days as the code before left them in Havana: 1 Nov 2026 keyed 05:00Z
    (its second midnight) and its first hour summed into 31 October. The
    migration forgets the zone of that org's days only, and the next pass
    rebuilds them right."""
    havana = make_org(time_zone="America/Havana")
    berlin = make_org(time_zone="Europe/Berlin")
    quiet = make_org(time_zone="America/Havana")  # no repeated midnight near its days
    for org in (havana, berlin):
        for at in ("2026-10-31T12:00Z", "2026-11-01T04:30Z", "2026-11-01T06:00Z"):
            make_event(org, started_at=datetime.fromisoformat(at), received_at=LONG_AGO)
    make_event(quiet, started_at=datetime(2026, 6, 10, 12, tzinfo=UTC), received_at=LONG_AGO)
    run("aggregate_usage")
    right = daily_rows(havana.id)
    assert right == hourly_by_day(havana.id, "America/Havana")
    DailyRollup.objects.filter(org=havana).delete()
    team, user = havana.teams.get(), havana.end_users.get()
    for day, requests in (("2026-10-31T04:00Z", 2), ("2026-11-01T05:00Z", 1)):
        DailyRollup.objects.create(
            org=havana,
            team=team,
            user=user,
            model="gpt-4o",
            day=datetime.fromisoformat(day),
            requests=requests,
            cost_usd=Decimal("0.001") * requests,
        )
    others = {
        pk: v
        for pk, v in row_versions().items()
        if DailyRollup.objects.get(pk=pk).org_id != havana.id
    }

    migration = import_module("tracking.migrations.0005_rebuild_days_keyed_by_a_later_midnight")
    with connection.cursor() as cursor:
        cursor.execute(migration.FORGET_DAYS_KEYED_BY_A_LATER_MIDNIGHT)

    assert set(DailyRollupZone.objects.values_list("org", flat=True)) == {berlin.id, quiet.id}
    assert rollups_refresh().day_builds == 1
    assert daily_rows(havana.id) == right
    assert {pk: v for pk, v in row_versions().items() if pk in others} == others
