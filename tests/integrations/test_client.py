"""The Python client (integrations/python) against a live Tollgate server:
every call a gateway makes, its typed errors, `hold()` in both flavours, and
what it does when Tollgate does not answer (through a proxy that fails on
purpose)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from tollgate_client import (
    AsyncTollgate,
    BudgetExceeded,
    InvalidRequest,
    RequestTooExpensive,
    Tollgate,
    Unavailable,
)
from tollgate_client import aio as tollgate_aio

from budgets.models import Budget, BudgetWindow, Reservation
from tests.integrations.conftest import TIMEOUT_MS, closed_port_url
from tracking.models import RequestEvent

# tg-chat at $1/M input and $10/M output (conftest's `prices`).
ESTIMATE = {"input_tokens": 1000, "max_output_tokens": 1000}  # holds $0.011
USAGE = {"prompt_tokens": 1000, "completion_tokens": 100}  # costs $0.002


def window(budget) -> BudgetWindow:
    return BudgetWindow.objects.get(budget=budget)


def status_of(reservation_id: str) -> str:
    return Reservation.objects.get(pk=reservation_id).status


def test_hold_settles_at_the_real_cost_with_the_holds_attribution(
    tollgate, org, make_budget, prices
):
    budget = make_budget(org, "10")
    with tollgate.hold(
        model="tg-chat", team="search", user="alice", tags={"feature": "faq"}, estimate=ESTIMATE
    ) as hold:
        assert hold.reservation.amount_usd == Decimal("0.011")
        assert window(budget).reserved == Decimal("0.011")
        result = hold.settle({"id": "chatcmpl-1", "model": "tg-chat", "usage": USAGE})

    assert result.cost_usd == Decimal("0.002") and result.priced is True
    assert result.reservation is not None and result.reservation["status"] == "settled"
    assert (window(budget).spent, window(budget).reserved) == (Decimal("0.002"), 0)
    event = RequestEvent.objects.get(event_id=result.id)
    assert (event.team.slug, event.user.external_id, event.model) == ("search", "alice", "tg-chat")
    assert event.tags == {"feature": "faq"}
    assert str(event.reservation_id) == hold.reservation.reservation_id
    assert event.latency_ms is not None


def test_a_hold_with_tags_is_held_on_their_tag_budgets(tollgate, org, make_budget):
    make_budget(org, "10")
    Budget.objects.create(org=org, scope="tag", tag="feature=faq", period="day", limit_usd=1)

    with tollgate.hold(team="search", tags={"feature": "faq"}, estimated_cost_usd="0.4") as hold:
        assert Reservation.objects.get().tags == {"feature": "faq"}
        assert any(b.scope == "tag" for b in hold.reservation.budgets)
        with pytest.raises(BudgetExceeded):
            tollgate.reserve(team="search", tags={"feature": "faq"}, estimated_cost_usd="0.7")
        refused = tollgate.check(team="search", tags={"feature": "faq"}, estimated_cost_usd="0.7")
        assert refused.allowed is False
        assert refused.blocked_by["scope"] == "tag"


def test_leaving_the_block_without_settling_releases(tollgate, org, make_budget):
    budget = make_budget(org, "10")
    with tollgate.hold(team="search", estimated_cost_usd="0.5") as hold:
        pass
    assert status_of(hold.reservation.reservation_id) == "released"
    assert window(budget).reserved == 0


def test_an_exception_in_the_block_releases_and_propagates(tollgate, org, make_budget):
    budget = make_budget(org, "10")
    with pytest.raises(ZeroDivisionError), tollgate.hold(estimated_cost_usd="0.5") as hold:
        1 / 0  # noqa: B018
    assert status_of(hold.reservation.reservation_id) == "released"
    assert window(budget).reserved == 0


def test_budget_exceeded_carries_the_budget_and_the_servers_message(
    api, tollgate, org, key, make_budget
):
    make_budget(org, "1", scope="user", user="alice")
    tollgate.reserve(team="search", user="alice", estimated_cost_usd="0.75")

    with pytest.raises(BudgetExceeded) as refused:
        tollgate.reserve(team="search", user="alice", estimated_cost_usd="0.5")

    error = refused.value
    assert (error.status, error.code) == (402, "budget_exceeded")
    assert (error.scope, error.id, error.period) == ("user", "alice", "day")
    assert (error.limit_usd, error.remaining_usd) == (Decimal("1"), Decimal("0.25"))
    assert error.resets_at is not None and error.resets_at.tzinfo is not None
    assert str(error) == error.message == error.body["error"]["message"]
    assert error.message.startswith("The user budget 'alice' (day) has $0.25 left of $1.00")


def test_request_over_a_cap_is_request_too_expensive(tollgate, org):
    org.max_request_usd = Decimal("0.01")
    org.save(update_fields=["max_request_usd"])

    with pytest.raises(RequestTooExpensive) as refused:
        tollgate.reserve(team="search", estimated_cost_usd="0.05")

    assert (refused.value.scope, refused.value.id) == ("org", "acme")
    assert (refused.value.max_request_usd, refused.value.amount_usd) == (
        Decimal("0.01"),
        Decimal("0.05"),
    )


def test_the_servers_4xx_are_invalid_request_with_its_message(server, tollgate):
    with pytest.raises(InvalidRequest) as bad_team:
        tollgate.reserve(team="x" * 200, estimated_cost_usd="0.01")
    assert (bad_team.value.status, bad_team.value.code, bad_team.value.field) == (
        422,
        "invalid_field",
        "team",
    )
    assert "team" in bad_team.value.message

    with pytest.raises(InvalidRequest) as unknown:
        tollgate.release("01a2474a-53dc-7114-98f2-aa6f3c8525bb")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")

    with Tollgate(server.url, "not-a-key", timeout_ms=TIMEOUT_MS) as stranger:
        with pytest.raises(InvalidRequest) as unauthenticated:
            stranger.check(estimated_cost_usd="0.01")
    assert (unauthenticated.value.status, unauthenticated.value.code) == (401, "unauthenticated")


def test_check_status_release_and_budgets(tollgate, server, org, make_budget, make_key):
    budget = make_budget(org, "1", scope="team", team="search")

    assert tollgate.check(team="search", estimated_cost_usd="0.5").allowed is True
    refused = tollgate.check(team="search", estimated_cost_usd="2")
    assert refused.allowed is False
    assert refused.blocked_by == {"scope": "team", "id": "search", "model": None, "period": "day"}

    reservation = tollgate.reserve(team="search", estimated_cost_usd="0.25", ttl_seconds=60)
    status = tollgate.status(team="search")
    (team_budget,) = [b for b in status.budgets if b.scope == "team"]
    assert (team_budget.reserved_usd, team_budget.remaining_usd) == (
        Decimal("0.25"),
        Decimal("0.75"),
    )
    assert reservation.reservation_id is not None
    first = tollgate.release(reservation.reservation_id)
    again = tollgate.release(reservation.reservation_id)
    assert (first.status, first.released, again.status) == ("released", True, "released")
    assert window(budget).reserved == 0

    with Tollgate(server.url, make_key(org, admin=True), timeout_ms=TIMEOUT_MS) as admin:
        admin.put_budget("user", "bob", "week", limit_usd="5", enforce=False)
        budgets = {(b.scope, b.id, b.period): b for b in admin.budgets()}
        assert budgets[("user", "bob", "week")].limit_usd == Decimal("5")
        assert budgets[("user", "bob", "week")].enforce is False
        admin.delete_budget("user", "bob", "week")
        assert ("user", "bob", "week") not in {(b.scope, b.id, b.period) for b in admin.budgets()}


def test_async_client_does_what_the_sync_one_does(server, key, org, make_budget, prices):
    budget = make_budget(org, "1")

    async def scenario() -> tuple[str, str]:
        async with AsyncTollgate(server.url, key, timeout_ms=TIMEOUT_MS) as tollgate:
            assert (await tollgate.check(estimated_cost_usd="2")).allowed is False
            with pytest.raises(BudgetExceeded):
                await tollgate.reserve(estimated_cost_usd="2")
            released = await tollgate.reserve(team="search", estimated_cost_usd="0.5")
            assert released.reservation_id is not None
            assert (await tollgate.release(released.reservation_id)).released is True
            async with tollgate.hold(model="tg-chat", estimate=ESTIMATE) as hold:
                result = await hold.settle(USAGE)
            assert result.cost_usd == Decimal("0.002")
            (recorded,) = await tollgate.record_events(
                [{"id": "async-1", "model": "tg-chat", "usage": USAGE}]
            )
            assert (recorded.id, recorded.duplicate) == ("async-1", False)
            status = await tollgate.status()
            assert status.budgets[0].spent_usd == Decimal("0.004")
            assert hold.reservation.reservation_id is not None
            return released.reservation_id, hold.reservation.reservation_id

    released_id, settled_id = asyncio.run(scenario())
    assert (status_of(released_id), status_of(settled_id)) == ("released", "settled")
    assert (window(budget).spent, window(budget).reserved) == (Decimal("0.004"), 0)


def test_async_hold_is_released_when_its_task_is_cancelled(server, key, org, make_budget):
    budget = make_budget(org, "10")
    holds: list[str] = []

    async def call_that_is_abandoned(tollgate: AsyncTollgate, entered: asyncio.Event) -> None:
        async with tollgate.hold(team="search", estimated_cost_usd="0.5") as hold:
            assert hold.reservation.reservation_id is not None
            holds.append(hold.reservation.reservation_id)
            entered.set()
            await asyncio.sleep(60)

    async def scenario() -> None:
        async with AsyncTollgate(server.url, key, timeout_ms=TIMEOUT_MS) as tollgate:
            for cancels in (1, 2):
                entered = asyncio.Event()
                task = asyncio.create_task(call_that_is_abandoned(tollgate, entered))
                await entered.wait()
                # Cancelled twice: the second lands while the release is under way.
                for _ in range(cancels):
                    task.cancel()
                    await asyncio.sleep(0)
                with pytest.raises(asyncio.CancelledError):
                    await task
            # The release goes on in the client's background after the task is done.
            await asyncio.wait_for(asyncio.gather(*tollgate_aio._background), 10)

    asyncio.run(scenario())
    assert [status_of(h) for h in holds] == ["released", "released"]
    assert window(budget).reserved == 0


# -- batches and retries --------------------------------------------------------


def test_events_go_in_requests_of_at_most_1000(faulty_proxy, key, org, prices):
    proxy = faulty_proxy()
    events = [{"model": "tg-chat", "usage": {"input_tokens": 1}} for _ in range(1001)]
    with Tollgate(proxy.url, key, timeout_ms=TIMEOUT_MS * 3) as tollgate:
        results = tollgate.record_events(events)

    assert len(results) == 1001 and not any(r.duplicate for r in results)
    assert len({r.id for r in results}) == 1001
    assert [len(body) > 0 for _, path, body in proxy.seen if path == "/v1/events"] == [True, True]
    assert RequestEvent.objects.filter(org=org).count() == 1001


@pytest.mark.parametrize("fault", ["lost", "lost-503", "503"])
def test_events_are_sent_again_with_the_same_ids(
    faulty_proxy, key, org, make_budget, prices, fault
):
    budget = make_budget(org, "10")
    proxy = faulty_proxy(fault)
    with Tollgate(proxy.url, key, timeout_ms=TIMEOUT_MS) as tollgate:
        result = tollgate.record_event(model="tg-chat", usage=USAGE)

    assert len(proxy.seen) == 2 and proxy.seen[0][2] == proxy.seen[1][2]
    # The first attempt was recorded when it reached the server: the second is its replay.
    assert result.duplicate is (fault != "503")
    assert RequestEvent.objects.filter(org=org).count() == 1
    assert window(budget).spent == Decimal("0.002")


def test_a_reservation_whose_answer_is_lost_is_not_sent_again(faulty_proxy, key, org, make_budget):
    budget = make_budget(org, "10")
    proxy = faulty_proxy("lost")
    with Tollgate(proxy.url, key, timeout_ms=TIMEOUT_MS) as tollgate, pytest.raises(Unavailable):
        tollgate.reserve(estimated_cost_usd="0.5")
    assert proxy.forwarded == 1
    # Held once (it expires on its TTL), never twice.
    assert window(budget).reserved == Decimal("0.5")


# -- when Tollgate does not answer ------------------------------------------------


def test_refuse_raises_unavailable_and_still_keeps_the_events(key):
    with Tollgate(closed_port_url(), key, timeout_ms=500, on_unavailable="refuse") as tollgate:
        with pytest.raises(Unavailable):
            tollgate.check(estimated_cost_usd="0.01")
        with pytest.raises(Unavailable):
            tollgate.reserve(estimated_cost_usd="0.01")
        with pytest.raises(Unavailable) as unrecorded:
            tollgate.record_event(id="kept-1", model="tg-chat", usage=USAGE)
        assert "queued" in unrecorded.value.message
        assert len(tollgate.queue) == 1


def test_timeout_ms_bounds_the_wait(faulty_proxy, key):
    proxy = faulty_proxy("hang", "hang", "hang", hang_seconds=5)
    started = time.monotonic()
    with Tollgate(proxy.url, key, timeout_ms=300) as tollgate, pytest.raises(Unavailable) as late:
        tollgate.check(estimated_cost_usd="0.01")
    assert time.monotonic() - started < 5
    assert "300 ms" in late.value.message


def test_allow_proceeds_and_records_the_spend_once_tollgate_is_back(
    faulty_proxy, key, org, make_budget, prices
):
    budget = make_budget(org, "10")
    # Down for the hold and the event (no retries), back for the flush.
    proxy = faulty_proxy("503", "503")
    tollgate = Tollgate(proxy.url, key, timeout_ms=TIMEOUT_MS, on_unavailable="allow", retries=0)
    with tollgate.hold(model="tg-chat", estimate=ESTIMATE) as hold:
        assert hold.reservation.degraded and hold.reservation.reservation_id is None
        queued = hold.settle(USAGE, event_id="late-1")
    assert (queued.queued, queued.cost_usd, len(tollgate.queue)) == (True, None, 1)
    assert not BudgetWindow.objects.filter(budget=budget).exists()  # nothing counted yet

    flushed = tollgate.flush()

    assert (flushed.sent, flushed.remaining) == (1, 0)
    assert RequestEvent.objects.get(event_id="late-1").cost_usd == Decimal("0.002")
    assert window(budget).spent == Decimal("0.002")
    tollgate.close()


def test_a_check_under_allow_is_degraded(key):
    with Tollgate(closed_port_url(), key, timeout_ms=500, on_unavailable="allow") as tollgate:
        decision = tollgate.check(estimated_cost_usd="0.01")
        release = tollgate.release("01a2474a-53dc-7114-98f2-aa6f3c8525bb")
    assert (decision.allowed, decision.degraded) == (True, True)
    assert (release.status, release.released) == ("unknown", False)


def test_the_queue_is_bounded_and_keeps_the_newest(key):
    with Tollgate(
        closed_port_url(), key, timeout_ms=300, on_unavailable="allow", max_queued_events=3
    ) as tollgate:
        results = tollgate.record_events([{"id": f"e{i}", "model": "tg-chat"} for i in range(5)])
        assert all(r.queued for r in results)
        assert (len(tollgate.queue), tollgate.queue.dropped) == (3, 2)
        assert [e["id"] for e in tollgate.queue.take(10)] == ["e2", "e3", "e4"]


def test_flush_drops_the_events_the_server_refuses_and_sends_the_rest(
    faulty_proxy, key, org, prices
):
    proxy = faulty_proxy("503")
    tollgate = Tollgate(proxy.url, key, timeout_ms=TIMEOUT_MS, on_unavailable="allow", retries=0)
    tollgate.record_events(
        [
            {"id": "good-1", "model": "tg-chat", "usage": USAGE},
            {"id": "bad", "model": "tg-chat", "usage": {"prompt_tokens": -1}},
            {"id": "good-2", "model": "tg-chat", "usage": USAGE},
        ]
    )
    assert len(tollgate.queue) == 3

    with pytest.raises(InvalidRequest) as refused:
        tollgate.flush()

    assert refused.value.status == 422
    assert len(tollgate.queue) == 0
    assert set(RequestEvent.objects.filter(org=org).values_list("event_id", flat=True)) == {
        "good-1",
        "good-2",
    }
    tollgate.close()


def test_budgets_carry_their_forecast(server, org, make_key, make_budget):
    from datetime import UTC, datetime, timedelta

    from budgets.models import Team
    from budgets.services import forecasts_refresh
    from tracking.models import HourlyRollup

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    team = Team.objects.create(org=org, slug="search")
    HourlyRollup.objects.create(
        org=org, team=team, model="m", hour=hour - timedelta(hours=1), cost_usd=Decimal(1)
    )
    budget = make_budget(org, "3", scope="team", team="search", period="total")
    BudgetWindow.objects.create(
        budget=budget,
        period_start=datetime(1970, 1, 1, tzinfo=UTC),
        period_end=datetime(9999, 12, 31, tzinfo=UTC),
        spent=Decimal(1),
    )
    forecasts_refresh()
    with Tollgate(server.url, make_key(org, admin=True), timeout_ms=TIMEOUT_MS) as admin:
        (listed,) = admin.budgets()
    # $2 left at $1 an hour; a total budget projects no end amount.
    assert listed.projected_usd is None
    assert listed.runs_out_at is not None
    assert abs(listed.runs_out_at - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(minutes=1)
