"""Holds settled by several events (POST /v1/events with "final": false)
through the real server and database: each partial cost is spent at once,
the hold keeps holding what is left of its amount until a final event, a
release or its expiry closes it; replays, conflicts and bad input."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.utils import timezone

from budgets.models import Reservation
from tests.conftest import assert_error, auth
from tests.tracking.test_record_events import (
    only_result,
    post,
    reserve,
    today_event,
    today_window,
)
from tests.tracking.test_unpriced_policy import MYSTERY, catalog  # noqa: F401 (fixture)
from tracking.models import RequestEvent


def partial(event_id: str, hold: str, cost: str, **fields: object) -> dict:
    return today_event(event_id, reservation_id=hold, cost_usd=cost, final=False, **fields)


@pytest.fixture
def budget(org, make_budget):
    return make_budget(org, "10")


def test_a_partial_cost_is_spent_at_once_and_the_hold_keeps_the_rest(api, org, key, budget):
    hold = reserve(api, key, "0.50")

    result = only_result(post(api, key, partial("p-1", hold, "0.125")))

    assert result["reservation"] == {
        "id": hold,
        "settled": True,
        "status": "active",
        "held_usd": "0.5",
        "settled_usd": "0.125",
        "over_hold_usd": None,
    }
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.125"), Decimal("0.375"))
    reservation = Reservation.objects.get(pk=hold)
    assert (reservation.status, reservation.settled, reservation.closed_at) == (
        "active",
        Decimal("0.125"),
        None,
    )


def test_partials_then_a_final_event_close_the_hold(api, org, key, budget):
    hold = reserve(api, key, "0.50")
    post(api, key, partial("p-1", hold, "0.1"))
    post(api, key, partial("p-2", hold, "0.2"))

    result = only_result(post(api, key, today_event("f-1", reservation_id=hold, cost_usd="0.05")))

    assert result["reservation"]["status"] == "settled"
    assert result["reservation"]["settled"] is True
    assert result["reservation"]["settled_usd"] == "0.35"
    assert result["reservation"]["over_hold_usd"] is None
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.35"), 0)
    # Closed: a later partial only adds spend.
    late = only_result(post(api, key, partial("p-3", hold, "0.01")))
    assert (late["reservation"]["settled"], late["reservation"]["status"]) == (False, "settled")
    assert late["reservation"]["settled_usd"] == "0.35"
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.36"), 0)


def test_partials_past_the_hold_hold_nothing_more_and_report_the_overrun(api, org, key, budget):
    other = reserve(api, key, "0.07")  # keeps `reserved` above zero: an over-unhold shows
    hold = reserve(api, key, "0.50")

    first = only_result(post(api, key, partial("p-1", hold, "0.4")))
    second = only_result(post(api, key, partial("p-2", hold, "0.3")))

    assert first["reservation"]["over_hold_usd"] is None
    assert second["reservation"]["status"] == "active"
    assert second["reservation"]["over_hold_usd"] == "0.2"
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.7"), Decimal("0.07"))
    # Closing it gives nothing more back.
    final = only_result(post(api, key, today_event("f-1", reservation_id=hold, cost_usd="0")))
    assert (final["reservation"]["status"], final["reservation"]["settled_usd"]) == (
        "settled",
        "0.7",
    )
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.7"), Decimal("0.07"))
    assert Reservation.objects.get(pk=other).status == "active"


def test_a_batch_with_partials_and_a_final_event_settles_them_all_and_closes(api, org, key, budget):
    hold = reserve(api, key, "0.50")

    response = post(
        api,
        key,
        {
            "events": [
                partial("b-1", hold, "0.1"),
                today_event("b-2", reservation_id=hold, cost_usd="0.2"),
                partial("b-3", hold, "0.05"),
            ]
        },
    )

    assert response.status_code == 201, response.text
    answers = [r["reservation"] for r in response.json()["results"]]
    assert {(a["settled"], a["status"], a["settled_usd"]) for a in answers} == {
        (True, "settled", "0.35")
    }
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.35"), 0)


def test_a_batch_of_partials_only_leaves_the_hold_active(api, org, key, budget):
    hold = reserve(api, key, "0.50")

    response = post(
        api, key, {"events": [partial("b-1", hold, "0.1"), partial("b-2", hold, "0.15")]}
    )

    assert response.status_code == 201, response.text
    assert {r["reservation"]["status"] for r in response.json()["results"]} == {"active"}
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.25"), Decimal("0.25"))


def test_release_after_partials_gives_back_only_what_is_left(api, org, key, budget):
    hold = reserve(api, key, "0.50")
    post(api, key, partial("p-1", hold, "0.2"))

    released = api.post(f"/v1/budget/reservations/{hold}/release", headers=auth(key))

    assert released.json() == {"reservation_id": hold, "status": "released", "released": True}
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.2"), 0)  # the partial cost stays spent


def test_expiry_after_partials_gives_back_only_what_is_left(api, org, key, budget):
    hold = reserve(api, key, "0.50")
    post(api, key, partial("p-1", hold, "0.2"))
    Reservation.objects.filter(pk=hold).update(expires_at=timezone.now())

    # The test server sweeps every second.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Reservation.objects.get(pk=hold).status == "active":
        time.sleep(0.2)

    assert Reservation.objects.get(pk=hold).status == "expired"
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.2"), 0)


def test_extend_between_partials_keeps_a_long_call_held(api, org, key, budget):
    hold = reserve(api, key, "0.50")
    post(api, key, partial("p-1", hold, "0.2"))

    extended = api.post(
        f"/v1/budget/reservations/{hold}/extend", json={"ttl_seconds": 900}, headers=auth(key)
    )

    assert extended.status_code == 200, extended.text
    assert (extended.json()["amount_usd"], extended.json()["settled_usd"]) == ("0.5", "0.2")


def test_a_partial_replay_is_a_duplicate_and_settles_nothing_more(api, org, key, budget):
    hold = reserve(api, key, "0.50")
    assert post(api, key, partial("p-1", hold, "0.2")).status_code == 201

    replay = only_result(post(api, key, partial("p-1", hold, "0.2")), 200)

    assert replay["duplicate"] is True
    assert replay["reservation"]["settled_usd"] == "0.2"
    assert replay["reservation"]["status"] == "active"
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.2"), Decimal("0.3"))


def test_the_same_id_as_a_final_event_is_a_conflict(api, org, key, budget):
    hold = reserve(api, key, "0.50")
    assert post(api, key, partial("p-1", hold, "0.2")).status_code == 201

    final = today_event("p-1", reservation_id=hold, cost_usd="0.2")
    error = assert_error(post(api, key, final), 409, "conflict")

    assert error["conflicts"] == [{"index": 0, "id": "p-1"}]
    assert Reservation.objects.get(pk=hold).status == "active"


def test_final_true_is_the_same_payload_as_no_final(api, org, key, budget):
    assert post(api, key, today_event("f-1", cost_usd="0.2")).status_code == 201

    replay = only_result(post(api, key, today_event("f-1", cost_usd="0.2", final=True)), 200)

    assert replay["duplicate"] is True


def test_a_partial_event_naming_no_hold_is_an_ordinary_event(api, org, key, budget):
    result = only_result(post(api, key, today_event("n-1", cost_usd="0.2", final=False)))

    assert "reservation" not in result
    assert today_window(budget).spent == Decimal("0.2")


@pytest.mark.parametrize("value", ["false", 0, 1, None, [], {}])
def test_final_that_is_not_a_boolean_is_422_naming_it(api, org, key, budget, value):
    hold = reserve(api, key, "0.50")
    if value is None:
        # JSON null is "not sent": the default, a final event.
        body = today_event("v-1", reservation_id=hold, cost_usd="0.1", final=None)
        assert only_result(post(api, key, body))["reservation"]["status"] == "settled"
        return

    single = post(api, key, today_event("v-1", reservation_id=hold, final=value))
    batch = post(
        api,
        key,
        {"events": [partial("v-2", hold, "0.1"), today_event("v-3", final=value)]},
    )

    assert_error(single, 422, "invalid_field", "final")
    error = assert_error(batch, 422, "invalid_field", "events[1].final")
    assert [e["index"] for e in error["errors"]] == [1]
    assert not RequestEvent.objects.exists()
    assert Reservation.objects.get(pk=hold).settled == 0


def test_an_unpriced_final_event_is_charged_what_is_left_of_the_hold(
    api,
    org,
    key,
    budget,
    catalog,  # noqa: F811
):
    hold = reserve(api, key, "0.05")

    first = only_result(post(api, key, today_event("u-1", reservation_id=hold, model=MYSTERY,
                                                     final=False)))  # fmt: skip
    last = only_result(post(api, key, today_event("u-2", reservation_id=hold, model=MYSTERY)))

    # A partial is charged at the fallback rate (1000 input at $5/M + 100
    # output at $10/M); the final one what is left of the hold.
    assert (first["cost_usd"], first["cost_source"]) == ("0.006", "fallback_rate")
    assert (last["cost_usd"], last["cost_source"]) == ("0.044", "hold")
    assert last["reservation"]["settled_usd"] == "0.05"
    w = today_window(budget)
    assert (w.spent, w.reserved) == (Decimal("0.05"), 0)
