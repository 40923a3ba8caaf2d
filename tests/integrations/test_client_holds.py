"""Holds that last: `extend` and partial settlements (`final=False`) through
the client, and a wrapped stream longer than its hold's TTL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import openai
import pytest
from tollgate_client import AsyncTollgate, InvalidRequest
from tollgate_client.openai import wrap

from budgets.models import BudgetWindow, Reservation
from tests.integrations.conftest import TIMEOUT_MS
from tests.integrations.fake_providers import OPENAI_COST

ESTIMATE = {"input_tokens": 1000, "max_output_tokens": 1000}  # $0.011 at tg-chat prices
USAGE = {"prompt_tokens": 1000, "completion_tokens": 100}  # $0.002


def window(budget) -> BudgetWindow:
    return BudgetWindow.objects.get(budget=budget)


def test_extend_moves_the_expiry_and_a_closed_hold_refuses_it(tollgate, org, make_budget):
    make_budget(org, "10")
    reservation = tollgate.reserve(estimated_cost_usd="0.5", ttl_seconds=60)
    assert reservation.reservation_id is not None and reservation.expires_at is not None

    extended = tollgate.extend(reservation.reservation_id, ttl_seconds=600)

    assert extended.status == "active"
    assert extended.expires_at is not None and extended.expires_at > reservation.expires_at
    # The API writes times to the millisecond.
    stored = Reservation.objects.get(pk=reservation.reservation_id).expires_at
    assert abs(stored - extended.expires_at) < timedelta(milliseconds=1)
    tollgate.release(reservation.reservation_id)
    with pytest.raises(InvalidRequest) as closed:
        tollgate.extend(reservation.reservation_id)
    assert (closed.value.status, closed.value.code) == (409, "reservation_closed")


def test_partial_settlements_keep_the_rest_held_until_the_final_one(
    tollgate, org, make_budget, prices
):
    budget = make_budget(org, "10")
    with tollgate.hold(model="tg-chat", estimate=ESTIMATE) as hold:
        first = hold.settle(USAGE, final=False)
        assert first.reservation is not None
        assert (first.reservation["status"], first.reservation["settled_usd"]) == (
            "active",
            "0.002",
        )
        assert (window(budget).spent, window(budget).reserved) == (
            Decimal("0.002"),
            Decimal("0.009"),
        )
        assert hold.extend(600) is not None
        last = hold.settle(USAGE)

    assert last.reservation is not None and last.reservation["status"] == "settled"
    assert (window(budget).spent, window(budget).reserved) == (Decimal("0.004"), 0)


def test_leaving_after_a_partial_settlement_releases_the_rest(
    server, key, org, make_budget, prices
):
    budget = make_budget(org, "10")

    async def scenario() -> str | None:
        async with AsyncTollgate(server.url, key, timeout_ms=TIMEOUT_MS) as tollgate:
            async with tollgate.hold(model="tg-chat", estimate=ESTIMATE) as hold:
                await hold.settle(USAGE, final=False)
                assert (await hold.extend(600)) is not None
            return hold.reservation.reservation_id

    reservation_id = asyncio.run(scenario())
    assert Reservation.objects.get(pk=reservation_id).status == "released"
    assert (window(budget).spent, window(budget).reserved) == (Decimal("0.002"), 0)


def test_a_stream_longer_than_its_ttl_keeps_its_hold(tollgate, provider, org, make_budget, prices):
    budget = make_budget(org, "10")
    provider.chunks, provider.chunk_delay = 6, 0.5  # about 3 s against a 2 s hold
    client = wrap(
        openai.OpenAI(base_url=provider.url + "/v1", api_key="x", max_retries=0),
        tollgate,
        ttl_seconds=2,
    )

    chunks = list(client.chat.completions.create(model="tg-chat", messages=[], stream=True))

    assert len(chunks) == 7
    (hold,) = Reservation.objects.filter(org=org)
    assert hold.status == "settled"
    assert (window(budget).spent, window(budget).reserved) == (Decimal(OPENAI_COST), 0)
