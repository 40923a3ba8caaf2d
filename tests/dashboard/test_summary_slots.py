"""Dashboard statements run at most DASHBOARD_DB_CONCURRENCY at a time per
process (default 2: a summary's two statements side by side): a process's
dashboards take at most that many of PostgreSQL's cores, and a summary that
cannot get a slot within its database time is a 503 in the error shape, not a
queue that grows.

As in test_summary_sharing.py, a lock on a table the statements read holds
them up, and PostgreSQL shows how many are running (waiting on that lock).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.dashboard.conftest import WAITING, fetch_summary, statements_waiting

# Time enough to wait on the lock; keys stay cached (their lookup reads the
# locked table too).
PATIENT = {"BUDGET_DB_TIMEOUT_MS": "15000", "API_KEY_CACHE_SECONDS": "300"}


@pytest.fixture(scope="module")
def default_server(live_server_factory):
    return live_server_factory(**PATIENT)


@pytest.fixture(scope="module")
def one_slot_server(live_server_factory):
    return live_server_factory(**PATIENT, DASHBOARD_DB_CONCURRENCY="1")


@pytest.fixture(scope="module")
def impatient_server(live_server_factory):
    return live_server_factory(
        BUDGET_DB_TIMEOUT_MS="1000", API_KEY_CACHE_SECONDS="300", DASHBOARD_DB_CONCURRENCY="1"
    )


def running_while_three_summaries_wait(url, test_database_url, key) -> int:
    """How many dashboard statements run while three summaries (six
    statements) are held on a lock; all three answer 200 once it goes."""
    assert fetch_summary(url, key, "7d").status_code == 200  # key cached, pool open
    with psycopg.connect(test_database_url, autocommit=True) as watcher:
        with psycopg.connect(test_database_url) as locker:
            locker.execute("LOCK TABLE budgets_organization IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(4) as pool:
                answers = [pool.submit(fetch_summary, url, key, r) for r in ("7d", "24h", "30d")]
                statements_waiting(watcher, 6)  # all six if nothing held them back
                time.sleep(0.5)  # one more started late would show up here
                running = watcher.execute(WAITING).fetchone()[0]
                locker.rollback()
                responses = [a.result() for a in answers]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r.json()["range"] for r in responses] == ["7d", "24h", "30d"]
    return running


def test_by_default_two_dashboard_statements_run_at_once(
    default_server, test_database_url, org, key
):
    assert running_while_three_summaries_wait(default_server.url, test_database_url, key) == 2


def test_one_slot_runs_one_statement_at_a_time(one_slot_server, test_database_url, org, key):
    assert running_while_three_summaries_wait(one_slot_server.url, test_database_url, key) == 1


def test_a_summary_without_a_slot_in_time_is_a_503(impatient_server, test_database_url, org, key):
    url = impatient_server.url
    assert fetch_summary(url, key, "7d").status_code == 200
    with psycopg.connect(test_database_url) as locker:
        locker.execute("LOCK TABLE budgets_organization IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(fetch_summary, url, key, "7d")  # takes the slot, waits on the lock
            time.sleep(0.2)
            started = time.monotonic()
            second = pool.submit(fetch_summary, url, key, "24h").result()  # waits for the slot
            waited = time.monotonic() - started
            first = first.result()
        locker.rollback()

    for response in (first, second):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"
    assert waited < 2.0  # within its 1 s of database time, not behind the lock
    assert fetch_summary(url, key, "24h").status_code == 200  # the slot was given back
