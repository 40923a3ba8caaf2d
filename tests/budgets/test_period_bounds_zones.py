"""Budget periods are right in every time zone, also where clocks change at midnight.

A day, ISO week or month starts at the first instant of its first local date
and ends where the next one starts. Where midnight is skipped (America/Santiago
on 2026-09-06) the day starts at 01:00; where it happens twice
(America/Havana on 2026-11-01) at the first 00:00. tollgate_period_bounds is
checked here against Python's zoneinfo for every zone both know, around every
change of UTC offset from 2020 to 2030: at each change, and at and around each
local midnight near it.
"""

from __future__ import annotations

import bisect
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import cache

import pytest
from django.db import connection

from loadtests.baselines.sync_views import period_bounds

PERIODS = ("day", "week", "month")
SPAN = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))
US = timedelta(microseconds=1)
DAY = timedelta(days=1)


def offset_at(zone: zoneinfo.ZoneInfo, at: datetime) -> timedelta:
    return at.astimezone(zone).utcoffset()


@cache
def transitions(name: str) -> tuple[datetime, ...]:
    """The instants at which the zone's UTC offset changes, to the second.

    Scanned a day at a time (no zone changes its offset and back within a
    day), then bisected. The scan starts two months before SPAN and ends two
    after it, so that the months around the first and last change are known.
    """
    zone = zoneinfo.ZoneInfo(name)
    found = []
    at, end = SPAN[0] - timedelta(days=62), SPAN[1] + timedelta(days=62)
    offset = offset_at(zone, at)
    while at < end:
        following = offset_at(zone, at + DAY)
        if following != offset:
            lo, hi = at, at + DAY
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(microsecond=0)
                lo, hi = (mid, hi) if offset_at(zone, mid) == offset else (lo, mid)
            found.append(hi)
        offset, at = following, at + DAY
    return tuple(found)


@cache
def first_instant(name: str, day: date) -> datetime:
    """The smallest instant whose local date is `day`.

    Between two changes the offset is fixed and local time runs with UTC, so
    the first instant of the day in each such stretch is either the stretch's
    start or local midnight read with the stretch's offset. The smallest of
    these whose local date is `day` is the day's first instant.
    """
    zone = zoneinfo.ZoneInfo(name)
    midnight = datetime.combine(day, time(), tzinfo=UTC)
    changes = transitions(name)
    lo = bisect.bisect_left(changes, midnight - 2 * DAY)
    hi = bisect.bisect_right(changes, midnight + 2 * DAY)
    near = changes[lo:hi]
    offsets = {offset_at(zone, midnight - 2 * DAY)} | {offset_at(zone, t) for t in near}
    candidates = [*near, *(midnight - offset for offset in offsets)]
    return min(at for at in candidates if at.astimezone(zone).date() == day)


def period_start(period: str, day: date) -> date:
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_start(period: str, start: date) -> date:
    if period == "day":
        return start + DAY
    if period == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def expected_bounds(name: str, period: str, at: datetime) -> tuple[datetime, datetime]:
    start = period_start(period, at.astimezone(zoneinfo.ZoneInfo(name)).date())
    begins, ends = first_instant(name, start), first_instant(name, next_start(period, start))
    assert begins <= at < ends, (name, period, at)
    return begins, ends


def instants_near(name: str, change: datetime) -> Iterator[datetime]:
    """Just before, at and after a change, and at and around the local
    midnights of the days it touches, read with either offset."""
    zone = zoneinfo.ZoneInfo(name)
    yield from (change - US, change, change + US)
    before, after = offset_at(zone, change - US), offset_at(zone, change)
    first = (change - US).astimezone(zone).date() - DAY
    last = change.astimezone(zone).date() + DAY
    day = first
    while day <= last:
        midnight = datetime.combine(day, time(), tzinfo=UTC)
        start = first_instant(name, day)
        yield from (start - US, start)
        read_before, read_after = midnight - before, midnight - after
        yield from (read_before, read_after, read_before + (read_after - read_before) / 2)
        day += DAY


def zones_both_know() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_timezone_names")
        known = {name for (name,) in cursor}
    return sorted(zoneinfo.available_timezones() & known)


@cache
def cases(zones: tuple[str, ...]) -> tuple[list[str], list[datetime]]:
    """(zone, instant) for every change of offset in SPAN, in every zone."""
    pairs = set()
    for name in zones:
        for change in transitions(name):
            if SPAN[0] <= change < SPAN[1]:
                pairs.update((name, at) for at in instants_near(name, change))
    ordered = sorted(pairs)
    return [name for name, _ in ordered], [at for _, at in ordered]


BOUNDS_SQL = """
    SELECT i.tz, i.at, p.period, i.at AT TIME ZONE i.tz, b.period_start, b.period_end
    FROM unnest(%s::text[], %s::timestamptz[]) AS i(tz, at)
    CROSS JOIN unnest(%s::text[]) AS p(period)
    CROSS JOIN LATERAL tollgate_period_bounds(p.period, i.tz, i.at) b
"""


def test_period_bounds_agree_with_zoneinfo_around_every_change_in_every_zone(db):
    names, instants = cases(tuple(zones_both_know()))
    with connection.cursor() as cursor:
        cursor.execute(BOUNDS_SQL, [names, instants, list(PERIODS)])
        rows = cursor.fetchall()

    # PostgreSQL bundles its own copy of the time zone database and Python
    # reads the system's; the two may be of different releases (Vancouver's
    # permanent summer time, CET and the like turned into links). A zone they
    # read differently at any checked instant is left out, by name.
    differ = sorted(
        {
            name
            for name, at, _, local_time, _, _ in rows
            if local_time != at.astimezone(zoneinfo.ZoneInfo(name)).replace(tzinfo=None)
        }
    )
    assert len(differ) <= 12, f"the zone databases differ on {differ}"
    assert not set(differ) & {"America/Santiago", "America/Havana", "Asia/Beirut", "Africa/Cairo"}
    compared = [row for row in rows if row[0] not in differ]
    zones = {row[0] for row in compared}
    changes = {(name, t) for name in zones for t in transitions(name) if SPAN[0] <= t < SPAN[1]}
    # Zones that changed their offset in SPAN; fixed-offset zones have no changes to check.
    assert len(zones) > 200 and len(changes) > 4000
    assert len(rows) == len(instants) * len(PERIODS)
    wrong = [
        (name, at, period, start, end, expected_bounds(name, period, at))
        for name, at, period, _, start, end in compared
        if (start, end) != expected_bounds(name, period, at)
    ]
    assert wrong == [], f"{len(wrong)} wrong, first: {wrong[:5]}"


def test_consecutive_periods_meet_exactly(db):
    names, instants = cases(tuple(zones_both_know()))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT c.tz, c.at, c.period, c.period_start, c.period_end,
                   n.period_start AS next_start, p.period_end AS previous_end
            FROM ({BOUNDS_SQL}) AS c(tz, at, period, local_time, period_start, period_end)
            CROSS JOIN LATERAL tollgate_period_bounds(c.period, c.tz, c.period_end) n
            CROSS JOIN LATERAL tollgate_period_bounds(
                c.period, c.tz, c.period_start - interval '1 microsecond') p
            WHERE NOT (c.period_start <= c.at AND c.at < c.period_end)
               OR n.period_start <> c.period_end
               OR p.period_end <> c.period_start
            """,
            [names, instants, list(PERIODS)],
        )
        gaps_or_overlaps = cursor.fetchall()
    assert gaps_or_overlaps == []


def test_the_load_tests_python_baseline_computes_the_same_bounds(db):
    names, instants = cases(tuple(zones_both_know()))
    wrong = [
        (name, at, period)
        for name, at in zip(names, instants, strict=True)
        for period in PERIODS
        if period_bounds(period, name, at) != expected_bounds(name, period, at)
    ]
    assert wrong == [], f"{len(wrong)} wrong, first: {wrong[:5]}"


def bounds(period: str, tz: str, at: str) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT period_start, period_end FROM tollgate_period_bounds(%s, %s, %s)",
            [period, tz, at],
        )
        start, end = cursor.fetchone()
    return start.astimezone(UTC).isoformat(), end.astimezone(UTC).isoformat()


@pytest.mark.parametrize(
    ("period", "tz", "at", "start", "end"),
    [
        # Midnight skipped: 6 Sep 2026 starts at 01:00 (-03) and has 23 hours;
        # it ended at 01:00 on the 7th, an hour into the next day.
        ("day", "America/Santiago", "2026-09-06T12:00Z", "2026-09-06T04:00", "2026-09-07T03:00"),
        ("day", "America/Santiago", "2026-09-05T12:00Z", "2026-09-05T04:00", "2026-09-06T04:00"),
        ("week", "America/Santiago", "2026-09-08T12:00Z", "2026-09-07T03:00", "2026-09-14T03:00"),
        # Midnight twice: 1 Nov 2026 starts at the first 00:00 (-04), 25 hours;
        # 04:30Z fell before its window's start (05:00Z, the second 00:00).
        ("day", "America/Havana", "2026-11-01T04:30Z", "2026-11-01T04:00", "2026-11-02T05:00"),
        ("month", "America/Havana", "2026-11-01T04:30Z", "2026-11-01T04:00", "2026-12-01T05:00"),
        ("month", "America/Havana", "2026-10-31T12:00Z", "2026-10-01T04:00", "2026-11-01T04:00"),
        # Havana skips midnight in March: 8 Mar 2026 starts at 01:00 (-04).
        ("day", "America/Havana", "2026-03-08T12:00Z", "2026-03-08T05:00", "2026-03-09T04:00"),
        # Beirut skips midnight on 29 Mar and repeats 23:00-00:00 on 24 Oct 2026.
        ("day", "Asia/Beirut", "2026-03-29T12:00Z", "2026-03-28T22:00", "2026-03-29T21:00"),
        ("day", "Asia/Beirut", "2026-10-24T12:00Z", "2026-10-23T21:00", "2026-10-24T22:00"),
        # Cairo skips midnight on 24 Apr and repeats 23:00-00:00 on 29 Oct 2026.
        ("day", "Africa/Cairo", "2026-04-24T12:00Z", "2026-04-23T22:00", "2026-04-24T21:00"),
        ("day", "Africa/Cairo", "2026-10-29T12:00Z", "2026-10-28T21:00", "2026-10-29T22:00"),
        # New York changes at 02:00: 23- and 25-hour days, 167- and 169-hour weeks.
        ("day", "America/New_York", "2026-03-08T12:00Z", "2026-03-08T05:00", "2026-03-09T04:00"),
        ("day", "America/New_York", "2026-11-01T12:00Z", "2026-11-01T04:00", "2026-11-02T05:00"),
        ("week", "America/New_York", "2026-03-08T12:00Z", "2026-03-02T05:00", "2026-03-09T04:00"),
        ("week", "America/New_York", "2026-11-01T12:00Z", "2026-10-26T04:00", "2026-11-02T05:00"),
    ],
)
def test_days_where_clocks_change(db, period, tz, at, start, end):
    assert bounds(period, tz, at) == (f"{start}:00+00:00", f"{end}:00+00:00")
