"""Identical summaries requested at the same time are computed once, and a
computed one answers the same requests for DASHBOARD_SUMMARY_MAX_AGE_MS.

The summary's statements are held up by a lock on a table they read; while
they wait, more people open the same dashboard. PostgreSQL shows how many
summary statements are waiting: the first request's two, not two per request.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from tests.conftest import auth
from tests.dashboard.conftest import (
    SUMMARY,
    WAITING,
    event,
    fetch_summary,
    record,
    statements_waiting,
)
from tests.dashboard.timing import summary_timing


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
    assert sorted(summary_timing(a.headers) for a in answers) == [
        'summary;desc="computed"',
        *['summary;desc="shared"'] * 7,
    ]
    assert other_answer.status_code == 200
    assert other_answer.json()["range"] == "24h"


REUSE_MS = 5000


@pytest.fixture(scope="module")
def reusing_server(live_server_factory):
    # Keys stay cached: their lookup reads the table the error test locks.
    return live_server_factory(
        DASHBOARD_SUMMARY_MAX_AGE_MS=str(REUSE_MS), API_KEY_CACHE_SECONDS="300"
    )


def test_a_computed_summary_answers_until_it_is_too_old(reusing_server, org, key):
    url = reusing_server.url
    started = time.monotonic()
    first_response = fetch_summary(url, key, "24h")
    first = first_response.json()
    with httpx.Client(base_url=url, timeout=30) as api:
        record(api, key, [event("after-the-first", cost="1.25")])
    again_response = fetch_summary(url, key, "24h")
    again = again_response.json()
    other_range = fetch_summary(url, key, "7d").json()
    assert time.monotonic() - started < REUSE_MS / 1000, "too slow to test the window"

    # Within the window: the same answer, without the event recorded since.
    assert summary_timing(first_response.headers) == 'summary;desc="computed"'
    assert summary_timing(again_response.headers) == 'summary;desc="reused"'
    assert again == first
    assert [r["id"] for r in again["recent"]] == []
    # Another range is a summary of its own, computed now.
    assert [r["id"] for r in other_range["recent"]] == ["after-the-first"]

    time.sleep(max(0.0, started + REUSE_MS / 1000 + 0.1 - time.monotonic()))
    later_response = fetch_summary(url, key, "24h")
    assert summary_timing(later_response.headers) == 'summary;desc="computed"'
    later = later_response.json()
    assert later["generated_at"] >= first["generated_at"]
    assert [r["id"] for r in later["recent"]] == ["after-the-first"]
    assert later["kpis"]["requests"] == 1


def test_a_failed_summary_is_not_kept(reusing_server, test_database_url, org, key):
    url = reusing_server.url
    assert fetch_summary(url, key, "30d").status_code == 200  # the key is cached now
    with httpx.Client(base_url=url, timeout=30) as api:
        record(api, key, [event("kept-out", cost="0.5")])
    with psycopg.connect(test_database_url) as locker:
        locker.execute("LOCK TABLE budgets_organization IN ACCESS EXCLUSIVE MODE")
        # The 30d answer above is kept; the month's is computed and times out.
        failed = fetch_summary(url, key, "mtd")
        locker.rollback()
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "store_unavailable"

    retried = fetch_summary(url, key, "mtd")
    assert retried.status_code == 200, retried.text
    assert [r["id"] for r in retried.json()["recent"]] == ["kept-out"]


def test_kept_summaries_are_kept_per_dates_and_filters(reusing_server, org, key):
    """A kept answer is the one for the same org, range, custom dates, team,
    user and model: a change of any of them is computed."""
    today = datetime.now(UTC).date()
    custom = {"range": "custom", "to": today.isoformat()}
    asks = [
        {**custom, "from": (today - timedelta(days=3)).isoformat()},
        {**custom, "from": (today - timedelta(days=2)).isoformat()},
        {"range": "7d", "user": "alice"},
        {"range": "7d", "user": "bob"},
        {"range": "7d", "model": "gpt-4o"},
        {"range": "7d", "team": "search"},
    ]
    with httpx.Client(base_url=reusing_server.url, timeout=30) as api:
        record(
            api,
            key,
            [event("a", cost="1", user="alice"), event("b", cost="2", user="bob", model="o4")],
        )
        first = [api.get(SUMMARY, params=ask, headers=auth(key)) for ask in asks]
        again = [api.get(SUMMARY, params=ask, headers=auth(key)) for ask in asks]

    assert [summary_timing(r.headers) for r in first] == ['summary;desc="computed"'] * len(asks)
    assert [summary_timing(r.headers) for r in again] == ['summary;desc="reused"'] * len(asks)
    assert [r.json()["from_date"] for r in first[:2]] == [asks[0]["from"], asks[1]["from"]]
    spend = [r.json()["kpis"]["spend_usd"] for r in first[2:]]
    assert spend == ["1", "2", "1", "3"]
