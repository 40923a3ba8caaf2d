"""The LiteLLM adapter (integrations/litellm) in a real LiteLLM proxy.

A LiteLLM proxy (1.108.7, in its own `.venv-litellm`, see tests/litellm_env.py)
runs in front of a fake OpenAI-compatible upstream that counts its calls
(loadtests/harness/fake_openai.py), with `tollgate_litellm.proxy.handler` in
its callbacks and a live Tollgate server behind the adapter. The official
OpenAI SDK drives it. The proxy takes ~20 s to start, so one proxy serves the
module, configured with one gateway key that each test restores after the
previous test's flush; each test charges a team of its own. The team comes from the
request tag `team:<name>`, the user from the request's `user`.

The adapter reaches Tollgate through a relay (relay.py) that a test can take
down or make hang. A second proxy, shared by the tests that need it, runs
the adapter with `TOLLGATE_ON_UNAVAILABLE=allow` and a hold TTL of 2 s (the
first runs the default, `refuse`, and a TTL no test reaches).

Without the LiteLLM venv (no network on a first run) the module skips, and
fails when CI is set.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import httpx
import openai
import pytest
from django.db import models
from django.utils import timezone

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
from tests.integrations.relay import Relay
from tests.litellm_env import LiteLLMUnavailable, litellm_python
from tracking.models import Price, RequestEvent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INPUT_PRICE = Decimal("0.000001")  # $1 per million input tokens
OUTPUT_PRICE = Decimal("0.00001")  # $10 per million output tokens
# Generous: the CI box is small and shared.
SETTLE_SECONDS = 30
# The allowing proxy's: holds short enough for a stream to outlive them
# unless extended; a Tollgate timeout that a loaded box still answers within.
SHORT_TTL_SECONDS = 2
ALLOWING_TIMEOUT_MS = 3000
# LiteLLM's tokenizer raises on this image detail: an exception inside the adapter.
UNCOUNTABLE = [
    {"type": "text", "text": "What is in this picture?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "ultra"}},
]


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


def _start(python, gateway, upstream, relay: Relay, directory, **settings: str) -> Process:
    return start_proxy(
        python,
        write_config(directory, upstream.url, adapter=True),
        directory,
        TOLLGATE_URL=relay.url,
        TOLLGATE_API_KEY=gateway[1],
        TOLLGATE_TEAM_FROM="tag:team",
        TOLLGATE_USER_FROM="end_user",
        TOLLGATE_TAGS_FROM="request_tags",
        TOLLGATE_DISCONNECT_GRACE_SECONDS="1",
        **settings,
    )


@pytest.fixture(scope="module")
def relays(server) -> Iterator[dict[str, Relay]]:
    """A relay to Tollgate for each proxy, by the proxy's policy."""
    made = {"refuse": Relay(server.url), "allow": Relay(server.url)}
    yield made
    for relay in made.values():
        relay.stop()


@pytest.fixture(scope="module")
def proxy(litellm_venv_python, gateway, upstream, relays, tmp_path_factory) -> Iterator[Process]:
    started = _start(
        litellm_venv_python,
        gateway,
        upstream,
        relays["refuse"],
        tmp_path_factory.mktemp("litellm"),
        TOLLGATE_TIMEOUT_MS="15000",
    )
    yield started
    started.stop()


@pytest.fixture(scope="module")
def allowing_proxy(
    litellm_venv_python, gateway, upstream, relays, tmp_path_factory
) -> Iterator[Process]:
    started = _start(
        litellm_venv_python,
        gateway,
        upstream,
        relays["allow"],
        tmp_path_factory.mktemp("litellm-allow"),
        TOLLGATE_ON_UNAVAILABLE="allow",
        TOLLGATE_TIMEOUT_MS=str(ALLOWING_TIMEOUT_MS),
        TOLLGATE_HOLD_TTL_SECONDS=str(SHORT_TTL_SECONDS),
        TOLLGATE_FLUSH_SECONDS="0.5",
    )
    yield started
    started.stop()


@pytest.fixture
def relay(relays) -> Iterator[Callable[[str], Relay]]:
    """The relay of a proxy's policy, up again after the test."""
    yield relays.__getitem__
    for each in relays.values():
        each.set("up")


def _sdk(proxy: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=MASTER_KEY, max_retries=0, timeout=120)


@pytest.fixture
def sdk(proxy) -> Iterator[openai.OpenAI]:
    with _sdk(proxy) as client:
        yield client


@pytest.fixture
def allowing_sdk(allowing_proxy) -> Iterator[openai.OpenAI]:
    with _sdk(allowing_proxy) as client:
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


def chat(sdk: openai.OpenAI, team: str, text: str | list[dict], **kwargs):
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


def test_a_tag_budget_holds_the_requests_tags_before_the_upstream(sdk, upstream, tollgate_org):
    """The adapter sends the request's tags with the hold: a budget on
    customer=tagged refuses a call too big for it before the upstream sees
    it, and counts the cost of one that fits."""
    budget = Budget.objects.create(
        org=tollgate_org, scope="tag", tag="customer=tagged", period="day",
        limit_usd=Decimal("0.001"), enforce=True,
    )  # fmt: skip
    tags = {"metadata": {"tags": ["team:tagged", "customer:tagged"]}}
    before = stats(upstream)["calls"]
    with pytest.raises(openai.APIStatusError) as refused:
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "A long answer, please."}],
            user="alice", max_tokens=200, extra_body=tags,
        )  # fmt: skip

    assert refused.value.status_code == 402
    assert "customer=tagged" in refused.value.message
    assert stats(upstream)["calls"] == before
    assert holds("tagged") == []

    response = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "A short one."}],
        user="alice", max_tokens=50, extra_body=tags,
    )  # fmt: skip
    event = wait_for(lambda: RequestEvent.objects.filter(team__slug="tagged").first(), "the event")
    assert event.tags == {"team": "tagged", "customer": "tagged"}
    assert event.cost_usd == cost_of(stats(upstream)["usage"][response.id])
    assert wait_for(lambda: totals(budget) == (event.cost_usd, 0), "the settled tag window")


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


# -- when Tollgate does not answer, or the adapter fails -------------------------


def test_tollgate_unreachable_under_refuse_answers_503_before_the_upstream(
    sdk, proxy, upstream, relay, team_budget
):
    budget = team_budget("outage", "10")
    before, mark = stats(upstream)["calls"], len(proxy.log())
    relay("refuse").set("down")  # connections refused: the client's retries give up at once
    with pytest.raises(openai.APIStatusError) as refused:
        chat(sdk, "outage", "Anyone there?", max_tokens=20)

    assert refused.value.status_code == 503
    assert "TOLLGATE_ON_UNAVAILABLE=refuse" in refused.value.message
    assert "Tollgate could not be reached" in refused.value.message
    assert stats(upstream)["calls"] == before
    wait_for(
        lambda: "reserve failed, the call is refused" in proxy.log()[mark:], "the refusal logged"
    )

    # Tollgate back: the same proxy holds and bills again.
    relay("refuse").set("up")
    raw = chat(sdk, "outage", "Anyone there now?", max_tokens=20)
    assert stats(upstream)["calls"] == before + 1
    event = wait_for(lambda: RequestEvent.objects.filter(team__slug="outage").first(), "the event")
    assert event.event_id == raw.headers["x-litellm-call-id"]
    assert [hold.status for hold in holds("outage")] == ["settled"]
    assert totals(budget) == (event.cost_usd, 0)


def test_an_exception_inside_the_adapter_under_refuse_is_logged_and_refuses(
    sdk, proxy, upstream, team_budget
):
    team_budget("faulty", "10")
    before, mark = stats(upstream)["calls"], len(proxy.log())
    with pytest.raises(openai.APIStatusError) as refused:
        chat(sdk, "faulty", UNCOUNTABLE, max_tokens=20)

    assert refused.value.status_code == 503
    assert "Invalid detail value: ultra" in refused.value.message
    assert stats(upstream)["calls"] == before
    assert holds("faulty") == []
    wait_for(
        lambda: "reserve failed, the call is refused: ValueError" in proxy.log()[mark:],
        "the exception logged",
    )
    # The proxy lives on.
    chat(sdk, "faulty", "Still there?", max_tokens=20)
    assert stats(upstream)["calls"] == before + 1


@pytest.mark.parametrize("outage", ["down", "hang"])
def test_tollgate_unreachable_under_allow_lets_the_call_through_and_bills_it_later(
    allowing_sdk, allowing_proxy, upstream, relay, team_budget, outage
):
    team = f"allowed-{outage}"
    budget = team_budget(team, "10")
    before, mark = stats(upstream)["calls"], len(allowing_proxy.log())
    # "hang": Tollgate takes the connection and never answers; the adapter
    # gives up after TOLLGATE_TIMEOUT_MS.
    relay("allow").set(outage)
    raw = chat(allowing_sdk, team, "Anyone there?", max_tokens=30)
    response = raw.parse()

    assert stats(upstream)["calls"] == before + 1
    # Its usage waits in the adapter while Tollgate does not answer ...
    wait_for(lambda: "event(s) queued" in allowing_proxy.log()[mark:], "the usage queued")
    assert not RequestEvent.objects.filter(team__slug=team).exists()
    assert holds(team) == []

    # ... and is recorded, under LiteLLM's call id, once Tollgate answers again
    # (TOLLGATE_FLUSH_SECONDS; no other call needed).
    relay("allow").set("up")
    event = wait_for(
        lambda: RequestEvent.objects.filter(team__slug=team).first(), "the queued usage recorded"
    )
    usage = stats(upstream)["usage"][response.id]
    assert event.event_id == raw.headers["x-litellm-call-id"]
    assert event.reservation_id is None
    assert event.cost_usd == cost_of(usage)
    assert totals(budget) == (cost_of(usage), 0)


def test_an_exception_inside_the_adapter_under_allow_is_logged_and_the_call_billed(
    allowing_sdk, allowing_proxy, upstream, team_budget
):
    team = "faulty-allowed"
    budget = team_budget(team, "10")
    before, mark = stats(upstream)["calls"], len(allowing_proxy.log())
    raw = chat(allowing_sdk, team, UNCOUNTABLE, max_tokens=30)
    response = raw.parse()

    assert stats(upstream)["calls"] == before + 1
    event = wait_for(lambda: RequestEvent.objects.filter(team__slug=team).first(), "the event")
    usage = stats(upstream)["usage"][response.id]
    assert event.event_id == raw.headers["x-litellm-call-id"]
    assert event.reservation_id is None  # no hold: the estimate could not be made
    assert event.cost_usd == cost_of(usage)
    assert totals(budget) == (cost_of(usage), 0)
    assert holds(team) == []
    assert "reserve failed, the call goes ahead: ValueError" in allowing_proxy.log()[mark:]


# -- holds during long streams ---------------------------------------------------


def test_a_stream_longer_than_its_holds_ttl_keeps_it_held_to_its_end(
    allowing_sdk, upstream, team_budget
):
    team = "long-stream"
    budget = team_budget(team, "10")
    raw = chat(
        allowing_sdk,
        team,
        "SLOW stream, please.",  # 40 chunks 0.1 s apart
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    )
    midway = None
    for received, chunk in enumerate(raw.parse(), start=1):
        completion_id = chunk.id
        if received == 35:
            # 3.5 s or more after the hold was taken for 2 s, and past the
            # server's sweep (every second): only extensions keep it.
            (hold,) = holds(team)
            midway = (
                hold.status,
                hold.expires_at - timezone.now(),  # what it has left
                hold.expires_at - hold.created_at,  # more than its TTL once extended
            )

    assert midway is not None
    status, left, lifetime = midway
    assert status == "active"
    assert left > timedelta(0)
    assert lifetime > timedelta(seconds=SHORT_TTL_SECONDS)

    event = wait_for(
        lambda: RequestEvent.objects.filter(team__slug=team).first(), "the stream's event"
    )
    usage = stats(upstream)["usage"][completion_id]
    assert event.event_id == raw.headers["x-litellm-call-id"]
    assert Reservation.objects.get(pk=event.reservation_id).status == "settled"
    assert totals(budget) == (cost_of(usage), 0)
