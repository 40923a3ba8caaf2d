"""Period windows roll over at local midnight in the organization's time zone.

These call the decision function directly with an explicit `p_at` (the
server passes NULL = now()), so that boundaries can be tested at chosen
instants against the real SQL.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from budgets.models import BudgetWindow


def decide(org, amount: str, at: datetime, *, hold: bool = True) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_decide(%s, false, NULL, NULL, %s, NULL, NULL, NULL, %s, 300, %s)",
            [org.id, Decimal(amount), hold, at],
        )
        result = cursor.fetchone()[0]
    return json.loads(result) if isinstance(result, str) else result


BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def berlin_org(make_org):
    return make_org("berlin", time_zone="Europe/Berlin")


def local(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("period", "before", "after", "resets_at"),
    [
        # 23:59 and 00:01 local time; Berlin is UTC+1 in November.
        ("day", local(2026, 11, 22, 23, 59), local(2026, 11, 23, 0, 1), "2026-11-22T23:00:00Z"),
        # ISO weeks start on Monday; 23 Nov 2026 is a Monday.
        ("week", local(2026, 11, 22, 23, 59), local(2026, 11, 23, 0, 1), "2026-11-22T23:00:00Z"),
        ("month", local(2026, 11, 30, 23, 59), local(2026, 12, 1, 0, 1), "2026-11-30T23:00:00Z"),
        # Across the DST change: the day of 29 Mar 2026 has 23 hours in Berlin.
        ("day", local(2026, 3, 29, 23, 59), local(2026, 3, 30, 0, 1), "2026-03-29T22:00:00Z"),
    ],
)
def test_period_rolls_over_at_local_midnight(
    db, berlin_org, make_budget, period, before, after, resets_at
):
    make_budget(berlin_org, "1", period=period)

    first = decide(berlin_org, "1", before)
    full = decide(berlin_org, "0.5", before)
    next_period = decide(berlin_org, "1", after)

    assert first["status"] == "held"
    assert first["budgets"][0]["resets_at"] == resets_at
    assert full["status"] == "denied"
    assert next_period["status"] == "held"
    assert BudgetWindow.objects.count() == 2


def test_window_bounds_are_local_midnights(db, berlin_org, make_budget):
    budget = make_budget(berlin_org, "1", period="day")
    decide(berlin_org, "0.1", local(2026, 7, 1, 12, 0))
    w = BudgetWindow.objects.get(budget=budget)
    assert w.period_start == local(2026, 7, 1, 0, 0)
    assert w.period_end == local(2026, 7, 2, 0, 0)


def test_total_budget_never_resets(db, berlin_org, make_budget):
    make_budget(berlin_org, "1", period="total")
    first = decide(berlin_org, "1", local(2026, 1, 1, 12, 0))
    years_later = decide(berlin_org, "0.01", local(2031, 6, 1, 12, 0))
    assert first["status"] == "held"
    assert first["budgets"][0]["resets_at"] is None
    assert years_later["status"] == "denied"


def test_utc_org_rolls_over_at_utc_midnight(db, make_org, make_budget):
    org = make_org("utcco")
    make_budget(org, "1")
    utc = ZoneInfo("UTC")
    assert decide(org, "1", datetime(2026, 11, 22, 23, 59, tzinfo=utc))["status"] == "held"
    assert decide(org, "1", datetime(2026, 11, 23, 0, 0, tzinfo=utc))["status"] == "held"
