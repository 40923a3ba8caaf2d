"""The LiteLLM adapter (integrations/litellm) in a real LiteLLM proxy.

A LiteLLM proxy (1.108.7, in its own `.venv-litellm`, see tests/litellm_env.py)
runs in front of a fake OpenAI-compatible upstream that counts its calls
(loadtests/harness/fake_openai.py), with `tollgate_litellm.proxy.handler` in
its callbacks and a live Tollgate server behind the adapter. The official
OpenAI SDK drives it. The proxy takes ~20 s to start, so one proxy serves the
module, configured with one gateway key that each test restores after the
previous test's flush; each test charges a team of its own. The team comes from the
request tag `team:<name>`, the user from the request's `user`.

Without the LiteLLM venv (no network on a first run) the module skips, and
fails when CI is set.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import openai
import pytest
from django.db import models

from budgets.models import Budget, BudgetWindow, Organization, Reservation, Team
from budgets.services import api_key_create, organization_create
from loadtests.harness.litellm_proxy import (
    MASTER_KEY,
    MODEL,
    Process,
    start_fake_upstream,
    start_proxy,
    write_config,
)
from tests.litellm_env import LiteLLMUnavailable, litellm_python
from tracking.models import Price, RequestEvent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INPUT_PRICE = Decimal("0.000001")  # $1 per million input tokens
OUTPUT_PRICE = Decimal("0.00001")  # $10 per million output tokens
# Generous: the CI box is small and shared.
SETTLE_SECONDS = 30


@pytest.fixture(scope="module")
def litellm_venv_python():
    try:
        return litellm_python()
    except LiteLLMUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"The LiteLLM proxy test must run in CI: {error}")
        pytest.skip(f"no LiteLLM virtualenv: {error}")


@pytest.fixture(scope="module")
def gateway(server, django_db_blocker) -> tuple[list[models.Model], str]:
    """The organization, gateway key and price the proxy works with: made
    once (the proxy is configured with the key), restored for each test."""
    with django_db_blocker.unblock():
        org = organization_create(slug="litellm")
        key, secret = api_key_create(org=org)
        price = Price.objects.create(
            provider="openai",
            model=MODEL,
            effective_from="2000-01-01T00:00:00Z",
            input_per_token=INPUT_PRICE,
            output_per_token=OUTPUT_PRICE,
        )
    return [org, key, price], secret


@pytest.fixture
def tollgate_org(gateway, transactional_db) -> Organization:
    """Each test's flush deletes the rows; they come back with the same ids
    and the same key, so the running proxy's key stays valid."""
    rows, _ = gateway
    for row in rows:
        fields = {f.attname: getattr(row, f.attname) for f in row._meta.concrete_fields}
        type(row).objects.update_or_create(pk=fields.pop("id"), defaults=fields)
    return Organization.objects.get(pk=rows[0].pk)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Iterator[Process]:
    fake = start_fake_upstream(tmp_path_factory.mktemp("fake"))
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def proxy(litellm_venv_python, gateway, upstream, server, tmp_path_factory) -> Iterator[Process]:
    directory = tmp_path_factory.mktemp("litellm")
    config = write_config(directory, upstream.url, adapter=True)
    started = start_proxy(
        litellm_venv_python,
        config,
        directory,
        TOLLGATE_URL=server.url,
        TOLLGATE_API_KEY=gateway[1],
        TOLLGATE_TIMEOUT_MS="15000",
        TOLLGATE_TEAM_FROM="tag:team",
        TOLLGATE_USER_FROM="end_user",
        TOLLGATE_TAGS_FROM="request_tags",
        TOLLGATE_DISCONNECT_GRACE_SECONDS="1",
    )
    yield started
    started.stop()


@pytest.fixture
def sdk(proxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=proxy.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=120
    ) as client:
        yield client


@pytest.fixture
def team_budget(tollgate_org) -> Callable[[str, str], Budget]:
    def factory(team: str, limit: str) -> Budget:
        org = tollgate_org
        return Budget.objects.create(
            org=org,
            scope="team",
            team=Team.objects.get_or_create(org=org, slug=team)[0],
            period="day",
            limit_usd=Decimal(limit),
            enforce=True,
        )

    return factory


def stats(upstream: Process) -> dict:
    return httpx.get(upstream.url + "/_stats", timeout=10).json()


def cost_of(usage: dict) -> Decimal:
    """Tollgate's price of the fake's usage (the fake reports no cache or reasoning)."""
    return usage["prompt_tokens"] * INPUT_PRICE + usage["completion_tokens"] * OUTPUT_PRICE


def totals(budget: Budget) -> tuple[Decimal, Decimal]:
    """The budget's spent and held amounts (its window is made by its first hold)."""
    row = BudgetWindow.objects.filter(budget=budget).values("spent", "reserved").first()
    return (row["spent"], row["reserved"]) if row else (Decimal(0), Decimal(0))


def holds(team: str) -> list[Reservation]:
    return list(Reservation.objects.filter(team__slug=team, org__slug="litellm"))


def wait_for(condition: Callable[[], object], what: str, timeout: float = SETTLE_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def chat(sdk: openai.OpenAI, team: str, text: str, **kwargs):
    """A call charged to `team`; answers the raw response (for LiteLLM's call id header)."""
    return sdk.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        user="alice",
        extra_body={"metadata": {"tags": [f"team:{team}", "feature:faq"]}},
        **kwargs,
    )


def test_allowed_calls_are_billed_exactly_with_litellms_call_id(sdk, upstream, team_budget):
    budget = team_budget("billed", "10")
    calls = []
    for max_tokens in (5, 40, 300):
        raw = chat(sdk, "billed", f"Tell me about the number {max_tokens}.", max_tokens=max_tokens)
        calls.append((raw.headers["x-litellm-call-id"], raw.parse()))

    events = wait_for(
        lambda: (
            list(RequestEvent.objects.filter(team__slug="billed"))
            if RequestEvent.objects.filter(team__slug="billed").count() == 3
            else None
        ),
        "three events",
    )
    fake_usage = stats(upstream)["usage"]
    by_id = {event.event_id: event for event in events}
    for call_id, response in calls:
        event = by_id[call_id]
        usage = fake_usage[response.id]
        assert response.usage.completion_tokens == usage["completion_tokens"]
        assert event.cost_usd == cost_of(usage)
        assert (event.input_tokens, event.output_tokens) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        assert event.user.external_id == "alice"
        assert event.tags == {"team": "billed", "feature": "faq"}
        assert Reservation.objects.get(pk=event.reservation_id).status == "settled"
    assert totals(budget) == (sum(cost_of(fake_usage[r.id]) for _, r in calls), 0)


def test_a_call_that_would_cross_the_budget_is_refused_before_the_upstream(
    sdk, upstream, team_budget
):
    budget = team_budget("refused", "0.001")  # holds 100 output tokens at most
    before = stats(upstream)["calls"]
    with pytest.raises(openai.APIStatusError) as refused:
        chat(sdk, "refused", "A long answer, please.", max_tokens=200)

    assert refused.value.status_code == 402
    assert "team budget 'refused'" in refused.value.message
    assert stats(upstream)["calls"] == before
    assert holds("refused") == []
    assert totals(budget) == (0, 0)

    # A call that fits still goes through.
    chat(sdk, "refused", "A short one.", max_tokens=50)
    assert stats(upstream)["calls"] == before + 1


def test_a_concurrent_burst_never_takes_spent_and_held_past_the_limit(proxy, upstream, team_budget):
    limit = Decimal("0.05")
    budget = team_budget("burst", str(limit))  # about 50 calls of 100 output tokens
    before = stats(upstream)["calls"]
    seen: list[Decimal] = []
    done = threading.Event()

    def watch() -> None:
        from django.db import connection

        try:
            while not done.is_set():
                spent, held = totals(budget)
                seen.append(spent + held)
                time.sleep(0.01)
        finally:
            connection.close()

    async def burst() -> list[object]:
        async with openai.AsyncOpenAI(
            base_url=proxy.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=120
        ) as client:

            async def one(i: int) -> object:
                try:
                    return await client.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": f"Burst call {i}."}],
                        max_tokens=100,
                        extra_body={"metadata": {"tags": ["team:burst"]}},
                    )
                except openai.APIStatusError as error:
                    return error

            return await asyncio.gather(*(one(i) for i in range(200)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = asyncio.run(burst())
        ok = [r for r in results if not isinstance(r, openai.APIStatusError)]
        refused = [r for r in results if isinstance(r, openai.APIStatusError)]
        assert {r.status_code for r in refused} == {402}
        assert 20 <= len(ok) <= 60 and len(ok) + len(refused) == 200
        wait_for(
            lambda: RequestEvent.objects.filter(team__slug="burst").count() == len(ok),
            "an event per allowed call",
        )
    finally:
        done.set()
        watcher.join()

    fake = stats(upstream)
    assert fake["calls"] - before == len(ok)  # no refused call reached the upstream
    assert len(seen) > 10 and max(seen) > 0
    assert max(seen) <= limit
    spent, held = totals(budget)
    assert held == 0
    assert spent == sum(cost_of(fake["usage"][r.id]) for r in ok) <= limit


def test_a_failing_upstream_releases_its_hold(sdk, upstream, team_budget):
    budget = team_budget("failing", "10")
    failed_before = stats(upstream)["failed"]
    with pytest.raises(openai.APIStatusError) as failed:
        chat(sdk, "failing", "FAIL on purpose", max_tokens=100)

    assert failed.value.status_code == 500
    assert stats(upstream)["failed"] > failed_before
    released = wait_for(
        lambda: (h := holds("failing")) and all(x.status == "released" for x in h) and h,
        "the hold released",
    )
    assert len(released) == 1
    assert totals(budget) == (0, 0)
    assert not RequestEvent.objects.filter(team__slug="failing").exists()


def test_a_streamed_call_settles_at_its_end(sdk, upstream, team_budget):
    budget = team_budget("streamed", "10")
    raw = chat(
        sdk,
        "streamed",
        "Stream me something.",
        max_tokens=25,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    completion_id = chunks[0].id

    event = wait_for(
        lambda: RequestEvent.objects.filter(team__slug="streamed").first(), "the stream's event"
    )
    usage = stats(upstream)["usage"][completion_id]
    assert event.event_id == raw.headers["x-litellm-call-id"]
    assert event.cost_usd == cost_of(usage)
    assert Reservation.objects.get(pk=event.reservation_id).status == "settled"
    assert totals(budget) == (cost_of(usage), 0)


def test_a_client_leaving_mid_stream_leaves_no_active_hold(sdk, upstream, team_budget):
    budget = team_budget("leaving", "10")
    streams_before = stats(upstream)["streams"]
    stream = chat(
        sdk,
        "leaving",
        "SLOW stream, please.",
        max_tokens=400,
        stream=True,
        stream_options={"include_usage": True},
    ).parse()
    for received, _chunk in enumerate(stream, start=1):
        if received == 5:
            break
    stream.close()
    assert stats(upstream)["streams"] == streams_before + 1

    closed = wait_for(
        lambda: (h := holds("leaving")) and all(x.status != "active" for x in h) and h,
        "the hold closed",
    )
    assert len(closed) == 1
    spent, held = totals(budget)
    assert held == 0
    # LiteLLM bills what was streamed before the client left: less than the
    # whole answer held for, more than nothing.
    events = list(RequestEvent.objects.filter(team__slug="leaving"))
    assert len(events) == 1
    assert 0 < events[0].output_tokens < 400
    assert spent == events[0].cost_usd > 0
