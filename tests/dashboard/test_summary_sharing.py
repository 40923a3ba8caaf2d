"""Identical summaries requested at the same time are computed once.

The summary's statements are held up by a lock on a table they read; while
they wait, more people open the same dashboard. PostgreSQL shows how many
summary statements are waiting: the first request's two, not two per request.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.dashboard.conftest import WAITING, fetch_summary, statements_waiting


@pytest.fixture(scope="module")
def patient_server(live_server_factory):
    # Time enough to wait on the lock; keys stay cached (their lookup reads
    # the locked table too); slots for two summaries' statements at once, so
    # that every statement started shows (test_summary_slots.py tests the limit).
    return live_server_factory(
        BUDGET_DB_TIMEOUT_MS="15000", API_KEY_CACHE_SECONDS="300", DASHBOARD_DB_CONCURRENCY="4"
    )


def test_concurrent_identical_summaries_share_one_computation(
    patient_server, test_database_url, org, key
):
    url = patient_server.url
    assert fetch_summary(url, key, "7d").status_code == 200

    with psycopg.connect(test_database_url, autocommit=True) as watcher:
        with psycopg.connect(test_database_url) as locker:
            locker.execute("LOCK TABLE budgets_organization IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(10) as pool:
                same = [pool.submit(fetch_summary, url, key, "7d") for _ in range(8)]
                assert statements_waiting(watcher, 2) == 2
                other = pool.submit(fetch_summary, url, key, "24h")
                # The other range is a computation of its own.
                assert statements_waiting(watcher, 4) == 4
                time.sleep(0.5)  # stragglers of the eight would show up here
                assert watcher.execute(WAITING).fetchone()[0] == 4
                locker.rollback()
                answers = [f.result() for f in same]
                other_answer = other.result()

    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.json()["generated_at"] for a in answers}) == 1
    assert other_answer.status_code == 200
    assert other_answer.json()["range"] == "24h"
