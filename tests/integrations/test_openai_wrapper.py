"""tollgate_client.openai.wrap: the official `openai` SDK against a local fake
OpenAI API, held and settled in a live Tollgate."""

from __future__ import annotations

import asyncio
import gc
from decimal import Decimal

import openai
import pytest
from tollgate_client import AsyncTollgate, BudgetExceeded, Tollgate
from tollgate_client import _wrapping as wrapping
from tollgate_client.openai import wrap

from budgets.models import BudgetWindow, Reservation
from tests.integrations.conftest import TIMEOUT_MS
from tests.integrations.fake_providers import OPENAI_COST
from tracking.models import RequestEvent

MESSAGES = [{"role": "user", "content": "Say hello. " * 30}]


@pytest.fixture
def budget(org, make_budget, prices):
    return make_budget(org, "10")


def sdk(provider) -> openai.OpenAI:
    return openai.OpenAI(base_url=provider.url + "/v1", api_key="sk-fake", max_retries=0)


def async_sdk(provider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="sk-fake", max_retries=0)


def only_event(org) -> RequestEvent:
    (event,) = RequestEvent.objects.filter(org=org)
    return event


def holds(org) -> list[str]:
    return list(Reservation.objects.filter(org=org).values_list("status", flat=True))


def assert_nothing_held(budget) -> None:
    assert BudgetWindow.objects.get(budget=budget).reserved == 0


def test_a_call_is_held_from_the_request_and_settled_from_its_usage(
    tollgate, provider, org, budget
):
    client = wrap(sdk(provider), tollgate, team="search", user="alice", tags={"app": "faq"})

    response = client.chat.completions.create(
        model="tg-chat", messages=MESSAGES, max_completion_tokens=500
    )

    assert response.choices[0].message.content == "hello"
    event = only_event(org)
    assert event.cost_usd == Decimal(OPENAI_COST)
    assert (event.team.slug, event.user.external_id, event.tags) == (
        "search",
        "alice",
        {"app": "faq"},
    )
    assert (event.model, event.provider, event.cache_read_tokens) == ("tg-chat", "openai", 200)
    hold = Reservation.objects.get(pk=event.reservation_id)
    # Held: the input's rough count at $1/M plus 500 output tokens at $10/M.
    input_estimate = wrapping.input_tokens(MESSAGES)
    assert hold.amount == (Decimal(input_estimate) + 500 * 10) / 1_000_000
    assert hold.status == "settled"
    window = BudgetWindow.objects.get(budget=budget)
    assert (window.spent, window.reserved) == (Decimal(OPENAI_COST), 0)


def test_a_refused_call_never_reaches_the_provider(tollgate, provider, org, make_budget, prices):
    make_budget(org, "0.001")
    client = wrap(sdk(provider), tollgate)

    with pytest.raises(BudgetExceeded) as refused:
        client.chat.completions.create(model="tg-chat", messages=MESSAGES, max_tokens=1000)

    assert refused.value.scope == "org"
    assert provider.calls == 0
    assert holds(org) == []


def test_a_failing_provider_releases_the_hold(tollgate, provider, org, budget):
    provider.mode = "fail"
    client = wrap(sdk(provider), tollgate)

    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="tg-chat", messages=MESSAGES, max_tokens=100)

    assert provider.calls == 1
    assert holds(org) == ["released"]
    assert not RequestEvent.objects.filter(org=org).exists()
    assert_nothing_held(budget)


def test_a_stream_asks_for_its_usage_and_settles_from_the_last_chunk(
    tollgate, provider, org, budget
):
    with wrap(sdk(provider), tollgate, team="search") as client:
        stream = client.chat.completions.create(
            model="tg-chat", messages=MESSAGES, max_tokens=100, stream=True
        )
        chunks = list(stream)

    assert provider.requests[0][1]["stream_options"] == {"include_usage": True}
    # The usage-only chunk the wrapper asked for is not the caller's.
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "word0 word1 word2 "
    assert only_event(org).cost_usd == Decimal(OPENAI_COST)
    assert holds(org) == ["settled"]
    assert_nothing_held(budget)


def test_a_caller_that_asked_for_usage_gets_the_usage_chunk(tollgate, provider, org, budget):
    client = wrap(sdk(provider), tollgate)

    chunks = list(
        client.chat.completions.create(
            model="tg-chat",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 1000
    assert holds(org) == ["settled"]


def test_a_stream_closed_early_releases_its_hold(tollgate, provider, org, budget):
    provider.chunks = 50
    client = wrap(sdk(provider), tollgate)

    with client.chat.completions.create(model="tg-chat", messages=MESSAGES, stream=True) as stream:
        next(stream)

    assert holds(org) == ["released"]
    assert not RequestEvent.objects.filter(org=org).exists()
    assert_nothing_held(budget)


def test_a_stream_dropped_unfinished_releases_its_hold(tollgate, provider, org, budget):
    provider.chunks = 50
    client = wrap(sdk(provider), tollgate)
    stream = client.chat.completions.create(model="tg-chat", messages=MESSAGES, stream=True)
    next(stream)

    del stream
    gc.collect()

    assert holds(org) == ["released"]
    assert_nothing_held(budget)


def test_a_stream_that_breaks_off_releases_its_hold(tollgate, provider, org, budget):
    provider.mode = "cut"
    client = wrap(sdk(provider), tollgate)
    stream = client.chat.completions.create(model="tg-chat", messages=MESSAGES, stream=True)

    with pytest.raises(openai.APIError):
        list(stream)

    assert holds(org) == ["released"]
    assert_nothing_held(budget)


def test_the_async_client_is_held_and_settled_the_same_way(server, key, provider, org, budget):
    async def scenario() -> None:
        async with AsyncTollgate(server.url, key, timeout_ms=TIMEOUT_MS) as tollgate:
            client = wrap(async_sdk(provider), tollgate, team="search")
            response = await client.chat.completions.create(
                model="tg-chat", messages=MESSAGES, max_tokens=100
            )
            assert response.usage is not None
            stream = await client.chat.completions.create(
                model="tg-chat", messages=MESSAGES, max_tokens=100, stream=True
            )
            assert len([chunk async for chunk in stream]) == 4
            provider.chunks = 50
            abandoned = await client.chat.completions.create(
                model="tg-chat", messages=MESSAGES, stream=True
            )
            await abandoned.__anext__()
            await abandoned.close()
            dropped = await client.chat.completions.create(
                model="tg-chat", messages=MESSAGES, stream=True
            )
            await dropped.__anext__()
            del dropped
            gc.collect()
            await asyncio.sleep(0.05)
            await asyncio.wait_for(asyncio.gather(*wrapping._finalizers), 10)
            await client.close()

    asyncio.run(scenario())

    assert sorted(holds(org)) == ["released", "released", "settled", "settled"]
    costs = RequestEvent.objects.filter(org=org).values_list("cost_usd", flat=True)
    assert list(costs) == [Decimal(OPENAI_COST)] * 2
    assert_nothing_held(budget)


def test_the_flavours_must_match(tollgate, server, key, provider):
    with pytest.raises(TypeError):
        wrap(async_sdk(provider), tollgate)
    with pytest.raises(TypeError):
        wrap(sdk(provider), AsyncTollgate(server.url, key))
    assert isinstance(tollgate, Tollgate)
