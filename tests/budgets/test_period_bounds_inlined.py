"""tollgate_period_bounds is inlined where the hot path calls it.

PostgreSQL inlines a SQL function called in FROM only when it is declared to
return a set; declared with OUT parameters, tollgate_period_bounds ran as a
function call (a Function Scan) for every budget of every hold and event.
EXPLAIN shows which: an inlined call leaves no node naming the function.
"""

from __future__ import annotations

from typing import Any

from django.db import connection


def function_scans(plan: dict[str, Any]) -> list[str]:
    found = [plan["Function Name"]] if plan.get("Node Type") == "Function Scan" else []
    for child in plan.get("Plans", []):
        found += function_scans(child)
    return found


def plan_of(sql: str, params: list) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (VERBOSE, FORMAT JSON) {sql}", params)
        value = cursor.fetchone()[0]
    return value[0]["Plan"]


def test_the_budgets_of_a_hold_are_read_without_calling_period_bounds(org, make_budget):
    make_budget(org, "10")
    make_budget(org, "100", period="month")
    plan = plan_of(
        "SELECT * FROM tollgate_applicable(%s, NULL, NULL, now(), NULL, NULL, NULL)", [org.id]
    )
    assert "tollgate_period_bounds" not in function_scans(plan)
    # The plan is that of the inlined body: it reads the budgets table itself.
    assert "budgets_budget" in str(plan)
    # The first instant of a local date is inlined too: the verbose plan shows
    # the expressions it computes, not a call.
    assert "tollgate_local_day_start" not in str(plan)


def test_period_bounds_still_answers_one_row_per_call(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.period, b.period_start, b.period_end"
            " FROM unnest(ARRAY['day', 'week', 'month', 'total']) AS p(period)"
            " CROSS JOIN LATERAL tollgate_period_bounds("
            "     p.period, 'UTC', '2026-11-22 17:30:00+00') b ORDER BY 1"
        )
        rows = {period: (start.isoformat(), end.isoformat()) for period, start, end in cursor}
    assert rows == {
        "day": ("2026-11-22T00:00:00+00:00", "2026-11-23T00:00:00+00:00"),
        "week": ("2026-11-16T00:00:00+00:00", "2026-11-23T00:00:00+00:00"),
        "month": ("2026-11-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00"),
        "total": ("1970-01-01T00:00:00+00:00", "9999-12-31T00:00:00+00:00"),
    }
