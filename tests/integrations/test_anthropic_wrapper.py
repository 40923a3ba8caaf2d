"""tollgate_client.anthropic.wrap: the official `anthropic` SDK against a local
fake Anthropic API, held and settled in a live Tollgate."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import anthropic
import pytest
from tollgate_client import AsyncTollgate, BudgetExceeded
from tollgate_client import _wrapping as wrapping
from tollgate_client.anthropic import wrap

from budgets.models import BudgetWindow, Reservation
from tests.integrations.conftest import TIMEOUT_MS
from tests.integrations.fake_providers import ANTHROPIC_COST, ANTHROPIC_START_COST
from tracking.models import RequestEvent

MESSAGES = [{"role": "user", "content": "Say hello. " * 30}]
SYSTEM = "You are terse."


@pytest.fixture
def budget(org, make_budget, prices):
    return make_budget(org, "10")


def sdk(provider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=provider.url, api_key="sk-ant-fake", max_retries=0)


def holds(org) -> list[str]:
    return list(Reservation.objects.filter(org=org).values_list("status", flat=True))


def costs(org) -> list[Decimal]:
    return list(RequestEvent.objects.filter(org=org).values_list("cost_usd", flat=True))


def assert_nothing_held(budget) -> None:
    assert BudgetWindow.objects.get(budget=budget).reserved == 0


def test_a_message_is_held_from_the_request_and_settled_from_its_usage(
    tollgate, provider, org, budget
):
    client = wrap(sdk(provider), tollgate, team="search", user="bob")

    message = client.messages.create(
        model="tg-claude", max_tokens=1024, system=SYSTEM, messages=MESSAGES
    )

    assert message.content[0].text == "hello"
    (event,) = RequestEvent.objects.filter(org=org)
    # Cache reads and writes at their own prices, thinking inside the output.
    assert event.cost_usd == Decimal(ANTHROPIC_COST)
    assert (event.input_tokens, event.cache_read_tokens, event.cache_write_tokens) == (50, 800, 100)
    assert (event.provider, event.team.slug, event.user.external_id) == (
        "anthropic",
        "search",
        "bob",
    )
    hold = Reservation.objects.get(pk=event.reservation_id)
    input_estimate = wrapping.input_tokens(MESSAGES, SYSTEM)
    assert hold.amount == (Decimal(input_estimate) + 1024 * 10) / 1_000_000
    assert hold.status == "settled"
    window = BudgetWindow.objects.get(budget=budget)
    assert (window.spent, window.reserved) == (Decimal(ANTHROPIC_COST), 0)


def test_a_refused_message_never_reaches_the_provider(tollgate, provider, org, make_budget, prices):
    make_budget(org, "0.01")
    client = wrap(sdk(provider), tollgate)

    with pytest.raises(BudgetExceeded):
        client.messages.create(model="tg-claude", max_tokens=4096, messages=MESSAGES)

    assert provider.calls == 0
    assert holds(org) == []


def test_a_failing_provider_releases_the_hold(tollgate, provider, org, budget):
    provider.mode = "fail"
    client = wrap(sdk(provider), tollgate)

    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="tg-claude", max_tokens=100, messages=MESSAGES)

    assert holds(org) == ["released"]
    assert_nothing_held(budget)


def test_a_stream_settles_with_message_start_and_message_delta_usage(
    tollgate, provider, org, budget
):
    client = wrap(sdk(provider), tollgate)

    events = list(
        client.messages.create(model="tg-claude", max_tokens=1024, messages=MESSAGES, stream=True)
    )

    assert [e.type for e in events][-2:] == ["message_delta", "message_stop"]
    assert costs(org) == [Decimal(ANTHROPIC_COST)]
    assert holds(org) == ["settled"]
    assert_nothing_held(budget)


def test_a_stream_left_early_settles_what_anthropic_reported_so_far(
    tollgate, provider, org, budget
):
    provider.chunks = 50
    client = wrap(sdk(provider), tollgate)

    with client.messages.create(
        model="tg-claude", max_tokens=1024, messages=MESSAGES, stream=True
    ) as stream:
        assert next(stream).type == "message_start"

    # The input was counted at message_start; one output token so far.
    assert costs(org) == [Decimal(ANTHROPIC_START_COST)]
    assert holds(org) == ["settled"]
    assert_nothing_held(budget)


def test_a_stream_that_fails_before_any_usage_releases(tollgate, provider, org, budget):
    provider.mode = "fail"
    client = wrap(sdk(provider), tollgate)

    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="tg-claude", max_tokens=100, messages=MESSAGES, stream=True)

    assert holds(org) == ["released"]
    assert_nothing_held(budget)


def test_the_stream_helper_settles_when_its_block_ends(tollgate, provider, org, budget):
    client = wrap(sdk(provider), tollgate)

    with client.messages.stream(model="tg-claude", max_tokens=1024, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
    assert text == "w0 w1 w2 "

    assert costs(org) == [Decimal(ANTHROPIC_COST)]
    assert holds(org) == ["settled"]


def test_the_async_client_is_held_and_settled_the_same_way(server, key, provider, org, budget):
    async def scenario() -> None:
        async with AsyncTollgate(server.url, key, timeout_ms=TIMEOUT_MS) as tollgate:
            raw = anthropic.AsyncAnthropic(base_url=provider.url, api_key="x", max_retries=0)
            async with wrap(raw, tollgate) as client:
                await run(client)

    async def run(client: anthropic.AsyncAnthropic) -> None:
        await client.messages.create(model="tg-claude", max_tokens=100, messages=MESSAGES)
        stream = await client.messages.create(
            model="tg-claude", max_tokens=100, messages=MESSAGES, stream=True
        )
        assert [e.type async for e in stream][-1] == "message_stop"
        async with client.messages.stream(
            model="tg-claude", max_tokens=100, messages=MESSAGES
        ) as helper:
            await helper.get_final_message()

    asyncio.run(scenario())

    assert costs(org) == [Decimal(ANTHROPIC_COST)] * 3
    assert holds(org) == ["settled"] * 3
    assert_nothing_held(budget)
