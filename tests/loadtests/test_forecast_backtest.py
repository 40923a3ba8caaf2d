"""The backtest's seeded history (loadtests/forecast_backtest.py) is the same
for a seed and has the shape its report describes; its periods match the
budgets' (tollgate_period_bounds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection

from loadtests.forecast_backtest import (
    TEAMS,
    TIME_ZONE,
    ZONE,
    forecast_points,
    period_bounds,
    synthetic_history,
)


def test_the_history_is_the_same_for_a_seed_and_differs_between_seeds():
    assert synthetic_history(3, 2) == synthetic_history(3, 2)
    assert synthetic_history(3, 2) != synthetic_history(4, 2)


def test_the_history_has_a_working_week():
    history = synthetic_history(7, 4)
    assert set(history) == set(TEAMS)
    weekday, weekend = [], []
    for hour, cost in history["search"].items():
        local = hour.astimezone(ZONE)
        if 10 <= local.hour < 12:
            (weekend if local.weekday() >= 5 else weekday).append(cost)
    assert sum(weekday) / len(weekday) > 4 * sum(weekend) / len(weekend)


def test_periods_are_the_budgets_periods(db):
    at = datetime(2026, 11, 1, 12, tzinfo=UTC)  # the day New York leaves DST
    with connection.cursor() as cursor:
        for period in ("day", "week", "month"):
            cursor.execute(
                "SELECT period_start, period_end FROM tollgate_period_bounds(%s, %s, %s)",
                [period, TIME_ZONE, at],
            )
            assert period_bounds(period, at.astimezone(ZONE)) == cursor.fetchone()


def test_forecast_points_fall_inside_their_periods():
    start = datetime(2026, 10, 1, tzinfo=UTC)
    points = forecast_points(start, start + timedelta(days=40))
    assert {period for period, _, _ in points} == {"day", "week", "month"}
    for period, point, at in points:
        begin, end = period_bounds(period, at.astimezone(ZONE))
        assert begin < at < end, (period, point, at)
