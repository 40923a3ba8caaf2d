"""An acknowledged hold, event or release is on disk when its answer arrives
(API.md: a 2xx is never sent for data that is not durable), also for holds
that went together in one call.

"Flushed" is checked the moment an answer arrives, on the suite's otherwise
quiet database: PostgreSQL has flushed its WAL up to where it has written it.
The first test shows that the check sees a commit that is not flushed yet.
Each request waits for the cluster to be quiet first: an autovacuum worker
(busy after the tests before this one) writes WAL without flushing it, and
would make the check fail for a write of its own.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from django.db import connection

from tests.conftest import auth

FLUSHED = "SELECT pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()"


def all_flushed() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(FLUSHED)
        return cursor.fetchone()[0]


def quiet() -> None:
    """Wait (at most 30 s) until no autovacuum worker runs and every WAL
    record written is flushed."""
    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            )
            if cursor.fetchone()[0] == 0 and all_flushed():
                return
            time.sleep(0.05)


def test_the_check_sees_a_commit_not_yet_flushed(transactional_db):
    # An asynchronous commit returns before its flush (the WAL writer flushes
    # it within wal_writer_delay, 200 ms by default): the check must say so.
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        try:
            # Its rows in the system catalogs are WAL-logged.
            cursor.execute("CREATE TEMP TABLE unflushed (n int)")
            cursor.execute(FLUSHED)
            flushed = cursor.fetchone()[0]
        finally:
            cursor.execute("RESET synchronous_commit")
    assert flushed is False


def _hold(api: httpx.Client, key: str) -> str:
    quiet()
    response = api.post(
        "/v1/budget/reservations",
        headers=auth(key),
        json={"team": "search", "estimated_cost_usd": "0.10"},
    )
    assert response.status_code == 201, response.text
    assert all_flushed(), "a hold was acknowledged before its commit was on disk"
    return response.json()["reservation_id"]


def test_every_acknowledged_write_is_on_disk_when_answered(api, org, key, admin_key, make_budget):
    make_budget(org, "100.00")
    for n in range(5):
        settled = _hold(api, key)
        quiet()
        event = api.post(
            "/v1/events",
            headers=auth(key),
            json={
                "id": f"durable-{n}",
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
        quiet()
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

    quiet()
    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [201] * 24
    assert all_flushed()
    response = httpx.get(f"{server.url}/v1/budgets", headers=auth(admin_key), timeout=10)
    (budget,) = response.json()["budgets"]
    assert budget["reserved_usd"] == "0.24"
