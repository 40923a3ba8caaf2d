"""When Postgres does not answer within BUDGET_DB_TIMEOUT_MS, check and
reserve answer per fail mode instead of hanging, and write nothing.

"Does not answer" is produced with the real database: another transaction
holds the lock on the budget window, so the decision cannot finish.
"""

from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest

from budgets.models import BudgetWindow, Reservation
from tests.conftest import auth

TIMEOUT_MS = 400


@pytest.fixture(scope="module")
def slow_db_server(live_server_factory):
    return live_server_factory(BUDGET_DB_TIMEOUT_MS=str(TIMEOUT_MS))


@pytest.fixture
def locked_window(test_database_url, org, key, make_budget, slow_db_server):
    """Create the window with one hold, then keep it locked from another connection."""
    budget = make_budget(org, "10")
    import httpx

    with httpx.Client(base_url=slow_db_server.url) as client:
        # Creates the window and warms the key cache (auth needs no query below).
        response = client.post(
            "/v1/budget/reservations", headers=auth(key), json={"estimated_cost_usd": "1"}
        )
        assert response.status_code == 201
    window = BudgetWindow.objects.get(budget=budget)
    with psycopg.connect(test_database_url) as conn:
        conn.execute("SELECT 1 FROM budgets_budgetwindow WHERE id = %s FOR UPDATE", [window.id])
        yield window
        conn.rollback()


def _timed_post(url: str, path: str, key: str, body: dict, request_id: str | None = None):
    import httpx

    headers = auth(key) | ({"X-Request-Id": request_id} if request_id else {})
    started = time.monotonic()
    response = httpx.post(url + path, json=body, headers=headers, timeout=10)
    return response, time.monotonic() - started


def test_fail_closed_answers_503_in_time_and_holds_nothing(slow_db_server, locked_window, key):
    response, elapsed = _timed_post(
        slow_db_server.url,
        "/v1/budget/reservations",
        key,
        {"estimated_cost_usd": "2"},
        request_id="req-failmode-1",
    )

    assert response.status_code == 503
    # The request id comes back, and is on the server's log line about it.
    assert response.headers["x-request-id"] == "req-failmode-1"
    log_line = next(
        line for line in slow_db_server.log().splitlines() if "request_id=req-failmode-1" in line
    )
    assert "store unavailable" in log_line
    assert response.json()["error"]["code"] == "store_unavailable"
    assert elapsed < TIMEOUT_MS / 1000 + 0.5
    time.sleep(0.3)  # let the cancelled statement end on the server
    locked_window.refresh_from_db()
    assert locked_window.reserved == Decimal("1")


def test_fail_open_allows_marked_degraded(slow_db_server, locked_window, org, key):
    org.fail_mode = "open"
    org.save()
    time.sleep(1.2)  # the org's settings ride in the key cache (1 s on the test server)
    # Warm the key again with the new org settings (the check does not need the lock).
    import httpx

    httpx.get(slow_db_server.url + "/v1/budget/status", headers=auth(key))

    reserve, reserve_elapsed = _timed_post(
        slow_db_server.url, "/v1/budget/reservations", key, {"estimated_cost_usd": "2"}
    )

    assert reserve.status_code == 201
    assert reserve.json()["degraded"] is True
    assert reserve.json()["reservation_id"] is None
    assert reserve_elapsed < TIMEOUT_MS / 1000 + 0.5
    assert Reservation.objects.count() == 1  # only the hold made before the lock


def test_check_fails_open_too(slow_db_server, org, key, make_budget, test_database_url):
    """A check does not take locks; make it wait on a locked team row instead."""
    org.fail_mode = "open"
    org.save()
    import httpx

    with httpx.Client(base_url=slow_db_server.url) as client:
        client.get("/v1/budget/status", headers=auth(key))  # warm the key cache
        with psycopg.connect(test_database_url) as conn:
            # Registering a new team waits on this uncommitted insert of the same team.
            conn.execute(
                "INSERT INTO budgets_team (org_id, slug, name, created_at) "
                "VALUES (%s, 'contended', '', now())",
                [org.id],
            )
            started = time.monotonic()
            response = client.post(
                "/v1/budget/check",
                headers=auth(key),
                json={"team": "contended", "estimated_cost_usd": "1"},
            )
            elapsed = time.monotonic() - started
            conn.rollback()

    assert response.status_code == 200
    assert response.json()["allowed"] is True
    assert response.json()["degraded"] is True
    assert elapsed < TIMEOUT_MS / 1000 + 0.5


@pytest.fixture(scope="module")
def open_by_default_server(live_server_factory):
    return live_server_factory(BUDGET_DB_TIMEOUT_MS=str(TIMEOUT_MS), BUDGET_FAIL_MODE="open")


def test_server_default_open_and_org_override_closed(
    open_by_default_server, make_org, make_key, make_budget, test_database_url
):
    """BUDGET_FAIL_MODE is the default; an organization's own setting wins."""
    import httpx

    by_default, strict = make_org("default-open"), make_org("own-closed")
    strict.fail_mode = "closed"
    strict.save()
    keys = {org.slug: make_key(org) for org in (by_default, strict)}
    windows = []
    with httpx.Client(base_url=open_by_default_server.url) as client:
        for org in (by_default, strict):
            budget = make_budget(org, "10")
            held = client.post(
                "/v1/budget/reservations",
                headers=auth(keys[org.slug]),
                json={"estimated_cost_usd": "1"},
            )
            assert held.status_code == 201  # creates the window, warms the key
            windows.append(BudgetWindow.objects.get(budget=budget).id)
    with psycopg.connect(test_database_url) as conn:
        conn.execute("SELECT 1 FROM budgets_budgetwindow WHERE id = ANY(%s) FOR UPDATE", [windows])
        answers = {
            slug: _timed_post(
                open_by_default_server.url,
                "/v1/budget/reservations",
                key,
                {"estimated_cost_usd": "2"},
            )
            for slug, key in keys.items()
        }
        conn.rollback()

    degraded, degraded_took = answers["default-open"]
    assert degraded.status_code == 201 and degraded.json()["degraded"] is True
    closed, closed_took = answers["own-closed"]
    assert closed.status_code == 503
    assert closed.json()["error"]["code"] == "store_unavailable"
    assert max(degraded_took, closed_took) < TIMEOUT_MS / 1000 + 0.5
    assert Reservation.objects.count() == 2  # only the holds made before the lock
