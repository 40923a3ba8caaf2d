"""A transient driver error on a read is retried on a fresh connection (bounded,
jittered); a write that may have committed is never run twice.

The error is real: the test kills the server backend that is running the
request (pg_terminate_backend) while the request waits on a lock another
connection holds, so the pooled connection dies under the query.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import httpx
import psycopg
import pytest

from budgets.models import BudgetWindow, Reservation
from tests.conftest import auth, metric, scrape_metrics

TIMEOUT_MS = 4000


@pytest.fixture(scope="module")
def retry_server(live_server_factory):
    return live_server_factory(BUDGET_DB_TIMEOUT_MS=str(TIMEOUT_MS))


def _kill_blocked_hotpath_backend(conn: psycopg.Connection) -> None:
    """Terminate the hot-path backend that waits on a lock (within 5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'tollgate-hotpath' AND wait_event_type = 'Lock' "
            "AND datname = current_database() LIMIT 1"
        ).fetchone()
        if row is not None:
            assert row[0] is True
            return
        time.sleep(0.02)
    raise AssertionError("no hot-path backend waited on the lock")


def _in_thread(call) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        outcome["response"] = call()
        outcome["took"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_check_is_retried_when_its_connection_dies(retry_server, org, key, test_database_url):
    before = scrape_metrics(retry_server.url)
    with httpx.Client(base_url=retry_server.url, timeout=10) as client:
        assert client.get("/v1/budget/status", headers=auth(key)).status_code == 200  # warm key
        with psycopg.connect(test_database_url, autocommit=True) as admin:
            with psycopg.connect(test_database_url) as blocker:
                # Registering this team waits on the uncommitted insert of the same team.
                blocker.execute(
                    "INSERT INTO budgets_team (org_id, slug, name, created_at) "
                    "VALUES (%s, 'contended', '', now())",
                    [org.id],
                )
                thread, outcome = _in_thread(
                    lambda: client.post(
                        "/v1/budget/check",
                        headers=auth(key),
                        json={"team": "contended", "estimated_cost_usd": "1"},
                    )
                )
                _kill_blocked_hotpath_backend(admin)
                blocker.rollback()
            thread.join(10)
    after = scrape_metrics(retry_server.url)

    response = outcome["response"]
    assert response.status_code == 200, response.text
    assert response.json()["allowed"] is True
    assert "degraded" not in response.json()  # answered by the database, not fail-open
    assert outcome["took"] < TIMEOUT_MS / 1000
    retried = metric(after, "tollgate_read_retries_total", query="decide") - metric(
        before, "tollgate_read_retries_total", query="decide"
    )
    assert retried == 1


def test_hold_is_not_retried_when_its_connection_dies(
    retry_server, org, key, make_budget, test_database_url
):
    budget = make_budget(org, "10")
    with httpx.Client(base_url=retry_server.url, timeout=10) as client:
        first = client.post(
            "/v1/budget/reservations", headers=auth(key), json={"estimated_cost_usd": "1"}
        )
        assert first.status_code == 201
        window = BudgetWindow.objects.get(budget=budget)
        with psycopg.connect(test_database_url, autocommit=True) as admin:
            with psycopg.connect(test_database_url) as blocker:
                blocker.execute(
                    "SELECT 1 FROM budgets_budgetwindow WHERE id = %s FOR UPDATE", [window.id]
                )
                thread, outcome = _in_thread(
                    lambda: client.post(
                        "/v1/budget/reservations",
                        headers=auth(key),
                        json={"estimated_cost_usd": "2"},
                    )
                )
                _kill_blocked_hotpath_backend(admin)
                thread.join(10)
                blocker.rollback()

    response = outcome["response"]
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "store_unavailable"
    # Answered at once (the driver error), not after the time budget.
    assert outcome["took"] < TIMEOUT_MS / 1000 / 2
    window.refresh_from_db()
    assert window.reserved == Decimal("1")
    assert Reservation.objects.count() == 1
