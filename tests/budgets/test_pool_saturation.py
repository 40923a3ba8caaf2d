"""A saturated hot-path pool fails fast instead of queueing without bound.

The pool is pinned for real: a tiny pool (2 connections) whose connections
both run `pg_sleep` issued through that same pool, for longer than a
request's time budget. Requests that arrive meanwhile wait in the pool's queue
for at most HOTPATH_POOL_TIMEOUT (shorter than BUDGET_DB_TIMEOUT_MS, the
budget for a slow query; holds may first wait for the batch ahead of them),
then answer per fail mode: 503 `store_unavailable` (closed) or
allowed with `"degraded": true` (open). Once the sleeps end the same process
serves normally again.

The application runs in this process (httpx's ASGI transport, the real
`config.asgi` app, the real pool on the test database) so that the test can
use the app's own pool; a server in another process would not let it.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import pytest

from budgets.models import Reservation
from config.hotpath import db
from tests.conftest import auth

POOL_MAX = 2
POOL_TIMEOUT = 0.3
# Longer than the pool timeout: a request that got a connection could wait
# this long for a slow query; one that got none must not.
DB_TIMEOUT_MS = 1500
SLEEP_SECONDS = 2.5
# Scheduling slack on a loaded 2-core box (test_fail_mode.py allows the same).
SLACK_SECONDS = 0.4
BURST = 40


@pytest.fixture
def tiny_pool(settings, transactional_db):
    # The pool is made with these settings on first use in the test's event
    # loop (db.get_pool makes a new one per loop) and closed at its end.
    settings.HOTPATH_POOL_MIN = POOL_MAX
    settings.HOTPATH_POOL_MAX = POOL_MAX
    settings.BUDGET_DB_TIMEOUT_MS = DB_TIMEOUT_MS
    settings.HOTPATH_POOL_TIMEOUT = POOL_TIMEOUT
    settings.API_KEY_CACHE_SECONDS = 60.0


def _client() -> httpx.AsyncClient:
    from config.asgi import application

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://127.0.0.1", timeout=10
    )


async def _pin_pool(release: asyncio.Event) -> list[asyncio.Task]:
    """Occupy every connection of the app's pool with a real slow query."""
    pool = await db.get_pool()
    await pool.wait(timeout=10)  # min_size connections are open
    started = asyncio.Event()
    busy = 0

    async def sleeper() -> None:
        nonlocal busy
        async with pool.connection(timeout=10) as conn:
            busy += 1
            if busy == POOL_MAX:
                started.set()
            await conn.execute("SELECT pg_sleep(%s)", [SLEEP_SECONDS])
        release.set()

    tasks = [asyncio.create_task(sleeper()) for _ in range(POOL_MAX)]
    await asyncio.wait_for(started.wait(), 10)
    assert pool.get_stats()["pool_available"] == 0
    return tasks


async def _timed(client: httpx.AsyncClient, method: str, path: str, key: str, body=None):
    started = time.monotonic()
    response = await client.request(method, path, headers=auth(key), json=body)
    return response, time.monotonic() - started


async def _saturate_and_recover(key: str) -> dict:
    outcome: dict = {}
    async with _client() as client:
        # Warm the key cache: authentication needs the pool too.
        warm = await client.post(
            "/v1/budget/reservations", headers=auth(key), json={"estimated_cost_usd": "1"}
        )
        assert warm.status_code == 201, warm.text

        released = asyncio.Event()
        sleepers = await _pin_pool(released)
        pool = await db.get_pool()
        queued_before = pool.get_stats().get("requests_queued", 0)

        burst_started = time.monotonic()
        answers = await asyncio.gather(
            *(
                _timed(client, "POST", "/v1/budget/reservations", key, {"estimated_cost_usd": "1"})
                for _ in range(BURST // 2)
            ),
            *(
                _timed(client, "POST", "/v1/budget/check", key, {"estimated_cost_usd": "1"})
                for _ in range(BURST // 2)
            ),
        )
        outcome["burst_seconds"] = time.monotonic() - burst_started
        outcome["answers"] = answers
        outcome["queued"] = pool.get_stats().get("requests_queued", 0) - queued_before
        outcome["sleepers_done_during_burst"] = released.is_set()

        await asyncio.gather(*sleepers)
        recovered, recovered_seconds = await _timed(
            client, "POST", "/v1/budget/reservations", key, {"estimated_cost_usd": "1"}
        )
        outcome["recovered"] = (recovered, recovered_seconds)
        await db.close_pool()
    return outcome


def _assert_bounded(outcome: dict) -> None:
    # The pool really was full for the whole burst...
    assert not outcome["sleepers_done_during_burst"]
    assert outcome["queued"] >= 1  # requests waited in the pool's queue
    # ...and every request answered long before its slow-query budget, all of
    # them together too. (Holds that arrive while two batches wait for the
    # pool wait for those first: up to two pool timeouts here.)
    limit = 2 * POOL_TIMEOUT + SLACK_SECONDS
    assert limit < DB_TIMEOUT_MS / 1000
    assert outcome["burst_seconds"] < limit
    for _response, elapsed in outcome["answers"]:
        assert POOL_TIMEOUT * 0.8 <= elapsed < limit


def test_saturated_pool_fails_closed_fast_and_recovers(tiny_pool, org, key, make_budget):
    make_budget(org, "1000")
    outcome = asyncio.run(_saturate_and_recover(key))

    _assert_bounded(outcome)
    for response, _elapsed in outcome["answers"]:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "store_unavailable"
    # Nothing was held for the refused reservations: the warm-up and the recovery only.
    assert Reservation.objects.filter(org=org).count() == 2
    recovered, seconds = outcome["recovered"]
    assert recovered.status_code == 201, recovered.text
    assert seconds < 1.0
    held = Reservation.objects.filter(org=org).values_list("amount", flat=True)
    assert sorted(held) == [Decimal("1"), Decimal("1")]


def test_saturated_pool_fails_open_fast_when_the_org_says_so(
    tiny_pool, make_org, make_key, make_budget
):
    org = make_org("open-org")
    org.fail_mode = "open"
    org.save()
    make_budget(org, "1000")
    key = make_key(org)

    outcome = asyncio.run(_saturate_and_recover(key))

    _assert_bounded(outcome)
    for response, _elapsed in outcome["answers"]:
        body = response.json()
        assert body["degraded"] is True, body
        if "reservation_id" in body:  # reserve
            assert response.status_code == 201
            assert body["reservation_id"] is None
        else:  # check
            assert response.status_code == 200
            assert body["allowed"] is True
    assert Reservation.objects.filter(org=org).count() == 2
    assert outcome["recovered"][0].status_code == 201
