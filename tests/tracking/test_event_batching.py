"""Event requests of one org that arrive while earlier ones are in flight are
recorded by one call (tracking/api.py, EventBatcher), and each request
still gets the answer it would get alone.

The test makes the queue that load makes: it holds the org's budget window
locked from another connection, so that the first call waits on it, and the
requests after it queue in the batcher. Rows inserted by one transaction
share their xmin, which shows which requests went together.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.db import connections
from django.test import override_settings

from budgets.auth import ApiKeyInfo
from budgets.models import BudgetWindow, Organization
from config.hotpath import db
from config.hotpath.errors import ApiError
from tracking import api as ingest

pytestmark = pytest.mark.django_db(transaction=True)

INFLIGHT = 1  # requests queue behind the one call (the second-call test sets 2)


def key_of(org: Organization) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=0, org_id=org.id, org_slug=org.slug,
        strict=org.strict, fail_mode="", team_slug=None, is_admin=False, revoked=False,
    )  # fmt: skip


def one_event(key: ApiKeyInfo, event_id: str, **extra: Any) -> list[dict[str, Any]]:
    raw = {
        "id": event_id,
        "team": "search",
        "user": "alice",
        "model": "gpt-4o",
        "cost_usd": "0.01",
        **extra,
    }
    events, _ = ingest.validate(raw, key)
    return events


def record(key: ApiKeyInfo, events: list[dict[str, Any]]) -> Awaitable[Any]:
    return ingest._batcher(key).record(events)


def run(scenario: Callable[[], Awaitable[Any]], **settings: Any) -> Any:
    async def main() -> Any:
        try:
            return await scenario()
        finally:
            await db.close_pool()
            ingest._batchers.clear()

    settings = {"HOTPATH_BATCH_INFLIGHT": INFLIGHT, "BUDGET_DB_TIMEOUT_MS": 20_000, **settings}
    with override_settings(**settings):
        return asyncio.run(main())


def _org_window_id(org: Organization) -> int:
    try:
        return BudgetWindow.objects.get(budget__org=org, budget__scope="org").id
    finally:
        # The worker thread's own connection: left open, it kept the test
        # database from being dropped at the end of a CI run.
        connections.close_all()


@contextlib.asynccontextmanager
async def window_locked(org: Organization) -> AsyncIterator[psycopg.AsyncConnection]:
    """The org's window locked by another connection (yielded) until the
    block ends."""
    window = await asyncio.to_thread(_org_window_id, org)
    locker = await psycopg.AsyncConnection.connect(**db.connection_kwargs())
    try:
        await locker.execute("BEGIN")
        await locker.execute(
            "SELECT 1 FROM budgets_budgetwindow WHERE id = %s FOR UPDATE", [window]
        )
        yield locker
        await locker.execute("COMMIT")
    finally:
        await locker.close()


async def behind_a_locked_window(
    org: Organization, key: ApiKeyInfo, blocked: list, queued: list
) -> tuple[list[Any], list[Any]]:
    """Send `blocked` (the calls in flight) while the org's window is locked,
    then `queued`; unlock when all have been submitted. Returns (answers of
    blocked, answers of queued), exceptions included."""
    async with window_locked(org) as locker:
        first = [asyncio.ensure_future(record(key, events)) for events in blocked]
        await _until_waiting_on_locks(locker, len(blocked))
        then = [asyncio.ensure_future(record(key, events)) for events in queued]
        await asyncio.sleep(0.05)
        assert len(ingest._batcher(key).pending) == len(queued)
    return (
        await asyncio.gather(*first, return_exceptions=True),
        await asyncio.gather(*then, return_exceptions=True),
    )


async def _until_waiting_on_locks(conn: psycopg.AsyncConnection, count: int) -> None:
    for _ in range(200):
        # The locker is inside its transaction, which keeps one snapshot of
        # the statistics unless told to drop it.
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%tollgate_record_events%'"
        )
        if (await cur.fetchone())[0] >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} calls never waited on the window lock")


def xmins(org: Organization, event_ids: list[str]) -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_id, xmin::text FROM tracking_requestevent"
            " WHERE org_id = %s AND event_id = ANY(%s)",
            [org.id, event_ids],
        )
        by_id = dict(cursor.fetchall())
    return [int(by_id[event_id]) for event_id in event_ids]


@pytest.fixture
def org(make_org, make_budget) -> Organization:
    org = make_org("acme")
    make_budget(org, "100")
    return org


def first_event(key: ApiKeyInfo) -> None:
    """Creates the org's window (the tests lock it)."""
    result = run(lambda: record(key, one_event(key, "warm-up")))
    assert result["status"] == "ok"


def test_requests_queued_behind_a_call_are_recorded_by_one_call(org):
    key = key_of(org)
    first_event(key)
    blocked_ids = ["blocked"]
    queued_ids = [f"queued-{n}" for n in range(6)]

    blocked, queued = run(
        lambda: behind_a_locked_window(
            org,
            key,
            [one_event(key, i) for i in blocked_ids],
            [one_event(key, i) for i in queued_ids],
        )
    )

    for answer, event_id in zip(blocked + queued, blocked_ids + queued_ids, strict=True):
        assert answer["status"] == "ok"
        assert [(r["idx"], r["id"], r["duplicate"]) for r in answer["results"]] == [
            (0, event_id, False)
        ]
    assert len(set(xmins(org, queued_ids))) == 1  # one transaction
    assert set(xmins(org, queued_ids)) != set(xmins(org, blocked_ids))
    window = BudgetWindow.objects.get(budget__org=org, budget__scope="org")
    assert window.spent == Decimal("0.01") * (1 + 1 + 6)


def test_a_conflicting_request_fails_alone(org):
    key = key_of(org)
    first_event(key)
    # "warm-up" again with another payload: 409 for that request only.
    conflicting = one_event(key, "warm-up", cost_usd="0.02")
    queued_ids = ["q-1", "q-2", "q-3"]

    _, queued = run(
        lambda: behind_a_locked_window(
            org,
            key,
            [one_event(key, "blocked")],
            [one_event(key, "q-1"), conflicting, one_event(key, "q-2"), one_event(key, "q-3")],
        )
    )

    assert isinstance(queued[1], ApiError) and queued[1].status == 409
    assert [a["results"][0]["id"] for a in (queued[0], queued[2], queued[3])] == queued_ids
    assert len(xmins(org, queued_ids)) == 3  # stored, each by its own call after the rejection


def test_one_event_id_in_two_requests_is_not_combined(org):
    key = key_of(org)
    first_event(key)

    _, queued = run(
        lambda: behind_a_locked_window(
            org,
            key,
            [one_event(key, "blocked")],
            [one_event(key, "twice"), one_event(key, "twice")],
        )
    )

    # Two calls, in flight together: either may commit first, as without batching.
    assert sorted(a["results"][0]["duplicate"] for a in queued) == [False, True]


def test_one_hold_named_by_two_requests_is_settled_by_one_of_them(org):
    key = key_of(org)
    first_event(key)

    reservation = run(lambda: _hold(org))

    _, queued = run(
        lambda: behind_a_locked_window(
            org,
            key,
            [one_event(key, "blocked")],
            [
                one_event(key, "settles", reservation_id=reservation),
                one_event(key, "too-late", reservation_id=reservation),
            ],
        )
    )

    assert sorted(a["results"][0]["reservation"]["settled"] for a in queued) == [False, True]
    assert xmins(org, ["settles"]) != xmins(org, ["too-late"])


def test_partial_settlements_of_one_hold_in_two_requests_both_count(org):
    key = key_of(org)
    first_event(key)
    reservation = run(lambda: _hold(org))

    _, queued = run(
        lambda: behind_a_locked_window(
            org,
            key,
            [one_event(key, "blocked")],
            [
                one_event(key, "part-1", reservation_id=reservation, final=False),
                one_event(key, "part-2", reservation_id=reservation, final=False),
            ],
        )
    )

    # Not combined (one hold), each settled into it in turn: 0.01, then 0.02.
    answers = [a["results"][0]["reservation"] for a in queued]
    assert [a["settled"] for a in answers] == [True, True]
    assert sorted(a["settled_usd"] for a in answers) == ["0.01", "0.02"]
    assert {a["status"] for a in answers} == {"active"}
    assert xmins(org, ["part-1"]) != xmins(org, ["part-2"])
    held = BudgetWindow.objects.get(budget__org=org, budget__scope="org")
    assert held.reserved == Decimal("0.03")


async def _hold(org: Organization) -> str:
    """A $0.05 hold of search/alice."""
    result = await db.fetch_value(
        "decide",
        {
            "org_id": org.id,
            "strict": False,
            "team": "search",
            "user": "alice",
            "model": None,
            "amount": Decimal("0.05"),
            "input_tokens": None,
            "max_output_tokens": None,
            "hold": True,
            "ttl_seconds": 300,
            "at": None,
            "key_id": None,
            "service_tier": "",
            "tags": None,
        },
    )
    return result["reservation_id"]


@contextlib.asynccontextmanager
async def one_call_blocked(
    org: Organization, key: ApiKeyInfo
) -> AsyncIterator[tuple[psycopg.AsyncConnection, list[asyncio.Future]]]:
    """The org's window locked by another connection and a first request
    ("blocked") in flight, waiting on it. Yields (the locking connection, the
    requests sent: add yours); on leaving, unlocks and checks every request
    was answered ok."""
    async with window_locked(org) as locker:
        sent = [asyncio.ensure_future(record(key, one_event(key, "blocked")))]
        await _until_waiting_on_locks(locker, 1)
        yield locker, sent
    answers = await asyncio.gather(*sent)
    assert [a["status"] for a in answers] == ["ok"] * len(sent)


def test_a_second_call_takes_requests_that_waited_behind_the_first(org, monkeypatch):
    """With one call in flight, requests wait for it; once they have waited
    SECOND_CALL_AFTER (a slow database), a second call (up to
    HOTPATH_BATCH_INFLIGHT) takes them."""
    monkeypatch.setattr(db, "SECOND_CALL_AFTER", 0.2)  # long enough to look before it fires
    key = key_of(org)
    first_event(key)

    async def scenario() -> None:
        batcher = ingest._batcher(key)
        async with one_call_blocked(org, key) as (locker, sent):
            sent += [asyncio.ensure_future(record(key, one_event(key, i))) for i in ("q1", "q2")]
            await asyncio.sleep(0)
            assert (len(batcher.pending), batcher.inflight) == (2, 1)  # not a full batch
            await _until_waiting_on_locks(locker, 2)  # the timer sent them
            assert (len(batcher.pending), batcher.inflight) == (0, 2)
            sent += [
                asyncio.ensure_future(record(key, one_event(key, i))) for i in ("r1", "r2", "r3")
            ]
            await asyncio.sleep(0.05)
            assert (len(batcher.pending), batcher.inflight) == (3, 2)  # no third slot

    run(scenario, HOTPATH_BATCH_INFLIGHT=2, HOTPATH_BATCH_MAX=3)

    waited, rest = xmins(org, ["q1", "q2"]), xmins(org, ["r1", "r2", "r3"])
    assert len(set(waited)) == 1 and len(set(rest)) == 1
    assert len({xmins(org, ["blocked"])[0], waited[0], rest[0]}) == 3


def test_a_full_batch_takes_the_second_slot_at_once(org):
    key = key_of(org)
    first_event(key)

    async def scenario() -> None:
        batcher = ingest._batcher(key)
        async with one_call_blocked(org, key) as (_, sent):
            sent += [
                asyncio.ensure_future(record(key, one_event(key, i))) for i in ("q1", "q2", "q3")
            ]
            await asyncio.sleep(0)  # all three submitted in one loop step: no timer ran
            assert (len(batcher.pending), batcher.inflight) == (0, 2)

    run(scenario, HOTPATH_BATCH_INFLIGHT=2, HOTPATH_BATCH_MAX=3)

    assert len(set(xmins(org, ["q1", "q2", "q3"]))) == 1


def test_the_next_batch_is_sent_before_a_call_hands_out_its_answers(org, monkeypatch):
    """When a call returns, the requests that queued behind it are sent
    before its own requests get their answers: handing those out wakes every
    request of the batch, and the server would write all their responses
    while PostgreSQL waited for the next query."""
    key = key_of(org)
    first_event(key)
    seen: list[tuple[str, bool]] = []
    blocked: list[asyncio.Future] = []
    fetch_one = db._fetch_one

    async def watched(pool, name, params, timeout, retries):
        seen.append((params["events"].obj[0]["event_id"], all(f.done() for f in blocked)))
        return await fetch_one(pool, name, params, timeout, retries)

    monkeypatch.setattr(db, "_fetch_one", watched)
    real_record = record

    def tracked(key: ApiKeyInfo, events: list[dict[str, Any]]) -> Awaitable[Any]:
        future = asyncio.ensure_future(real_record(key, events))
        if events[0]["event_id"] == "blocked":
            blocked.append(future)
        return future

    monkeypatch.setattr(sys.modules[__name__], "record", tracked)
    first, queued = run(
        lambda: behind_a_locked_window(
            org, key, [one_event(key, "blocked")], [one_event(key, f"q-{n}") for n in range(3)]
        )
    )

    assert first[0]["status"] == "ok" and all(a["status"] == "ok" for a in queued)
    # (first event id of each call, whether the blocked request had its answer then)
    assert seen == [("blocked", False), ("q-0", False)]
