"""Holds, releases and event batches commit early: their budget windows' locks
go as soon as they commit, and the answer leaves only once the commit is
flushed to disk (tollgate_commit_early, HOTPATH_EARLY_LOCK_RELEASE).

"Flushed" is checked the moment an answer arrives, on the suite's otherwise
quiet database: PostgreSQL has flushed its WAL up to where it has written it.
The first test shows that the check sees a commit that is not flushed yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from django.db import connection
from django.test import override_settings

from budgets import db
from tests.conftest import auth, start_server, stop_server

FLUSHED = "SELECT pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()"


def all_flushed() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(FLUSHED)
        return cursor.fetchone()[0]


def test_the_check_sees_a_commit_not_yet_flushed(transactional_db):
    # An asynchronous commit returns before its flush (the WAL writer flushes
    # it within wal_writer_delay, 200 ms by default): the check must say so.
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        try:
            cursor.execute("CREATE TEMP TABLE unflushed (n int)")
            cursor.execute("INSERT INTO unflushed SELECT 1")
            cursor.execute("UPDATE budgets_organization SET name = name")
            cursor.execute(FLUSHED)
            flushed = cursor.fetchone()[0]
        finally:
            cursor.execute("RESET synchronous_commit")
    assert flushed is False


def _hold(api: httpx.Client, key: str, amount: str = "0.10") -> str:
    response = api.post(
        "/v1/budget/reservations",
        headers=auth(key),
        json={"team": "search", "estimated_cost_usd": amount},
    )
    assert response.status_code == 201, response.text
    assert all_flushed(), "a hold was acknowledged before its commit was on disk"
    return response.json()["reservation_id"]


def test_every_acknowledged_write_is_on_disk_when_answered(api, org, key, admin_key, make_budget):
    make_budget(org, "100.00")
    for n in range(5):
        settled = _hold(api, key)
        event = api.post(
            "/v1/events",
            headers=auth(key),
            json={
                "id": f"early-{n}",
                "team": "search",
                "model": "m",
                "cost_usd": "0.07",
                "reservation_id": settled,
            },
        )
        assert event.status_code == 201, event.text
        assert event.json()["results"][0]["reservation"]["settled"] is True
        assert all_flushed(), "an event was acknowledged before its commit was on disk"

        released = _hold(api, key)
        response = api.post(f"/v1/budget/reservations/{released}/release", headers=auth(key))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "released"
        assert all_flushed(), "a release was acknowledged before its commit was on disk"

    # Every hold went back or was settled, and the spend is exact.
    response = api.get("/v1/budgets", headers=auth(admin_key))
    (budget,) = response.json()["budgets"]
    assert (budget["spent_usd"], budget["reserved_usd"]) == ("0.35", "0")


def test_holds_sent_together_are_on_disk_when_answered(server, org, key, admin_key, make_budget):
    # Holds arriving while one is in flight go together (tollgate_decide_many).
    make_budget(org, "100.00")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, headers=auth(key), timeout=10) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/v1/budget/reservations",
                        json={"team": f"t{n % 3}", "estimated_cost_usd": "0.01"},
                    )
                    for n in range(24)
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [201] * 24
    assert all_flushed()
    response = httpx.get(f"{server.url}/v1/budgets", headers=auth(admin_key), timeout=10)
    (budget,) = response.json()["budgets"]
    assert budget["reserved_usd"] == "0.24"


def test_writes_commit_early_unless_turned_off():
    hold = {"hold": True}
    with override_settings(HOTPATH_EARLY_LOCK_RELEASE=True):
        for name in ("decide", "decide_many", "release", "record_events"):
            assert db.statement(name, hold).startswith("CALL tollgate_commit_early(tollgate_")
        # A check holds nothing: no flush to wait for.
        assert db.statement("decide", {"hold": False}) == db.QUERIES["decide"]
        assert db.statement("list_budgets", {}) == db.QUERIES["list_budgets"]
    with override_settings(HOTPATH_EARLY_LOCK_RELEASE=False):
        assert db.statement("decide", hold) == db.QUERIES["decide"]
        assert db.statement("record_events", {}) == db.QUERIES["record_events"]


@pytest.fixture
def plain_commit_server(test_database_url, tmp_path) -> Iterator:
    live = start_server(test_database_url, tmp_path, HOTPATH_EARLY_LOCK_RELEASE="false")
    yield live
    stop_server(live)


def test_plain_commits_when_turned_off(plain_commit_server, org, key, make_budget):
    make_budget(org, "1.00")
    with httpx.Client(base_url=plain_commit_server.url, timeout=10) as api:
        settled = _hold(api, key, "0.60")
        # Over the limit with the first hold still counted: denied.
        response = api.post(
            "/v1/budget/reservations",
            headers=auth(key),
            json={"team": "search", "estimated_cost_usd": "0.60"},
        )
        assert response.status_code == 402, response.text
        response = api.post(f"/v1/budget/reservations/{settled}/release", headers=auth(key))
        assert response.json()["status"] == "released"
        assert all_flushed()
