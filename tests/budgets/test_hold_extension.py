"""POST /v1/budget/reservations/{id}/extend through the real server: a hold's
expiry pushed forward (never back), closed holds refused with how they
closed, unknown ids, and bad input that changes nothing."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from budgets.models import BudgetWindow, Reservation
from tests.budgets.test_reservation_retention import id_made_at
from tests.conftest import assert_error, auth


def reserve(api, key, amount="0.5", **extra) -> str:
    body = {"team": "search", "user": "alice", "estimated_cost_usd": amount, **extra}
    response = api.post("/v1/budget/reservations", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    return response.json()["reservation_id"]


def extend(api, key, reservation_id, body=None, **kwargs):
    return api.post(
        f"/v1/budget/reservations/{reservation_id}/extend", json=body, headers=auth(key), **kwargs
    )


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def to_ms(at: datetime) -> datetime:
    """As the API writes times: to the millisecond."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def window(budget) -> BudgetWindow:
    return BudgetWindow.objects.get(budget=budget)


def test_extend_pushes_the_expiry_to_ttl_seconds_from_now(api, org, key, make_budget):
    make_budget(org, "1")
    hold = reserve(api, key, ttl_seconds=60)
    before = datetime.now(UTC)

    response = extend(api, key, hold, {"ttl_seconds": 1800})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "reservation_id": hold,
        "status": "active",
        "expires_at": body["expires_at"],
        "amount_usd": "0.5",
        "settled_usd": "0",
    }
    expires = moment(body["expires_at"])
    assert before + timedelta(seconds=1795) < expires < before + timedelta(seconds=1810)
    assert to_ms(Reservation.objects.get(pk=hold).expires_at) == expires


def test_an_empty_body_extends_by_the_default_300_seconds(api, org, key, make_budget):
    make_budget(org, "1")
    hold = reserve(api, key, ttl_seconds=5)
    before = datetime.now(UTC)

    response = api.post(f"/v1/budget/reservations/{hold}/extend", headers=auth(key))

    assert response.status_code == 200, response.text
    expires = moment(response.json()["expires_at"])
    assert before + timedelta(seconds=295) < expires < before + timedelta(seconds=310)


def test_extend_never_shortens_a_hold_and_repeating_it_is_harmless(api, org, key, make_budget):
    budget = make_budget(org, "1")
    hold = reserve(api, key, ttl_seconds=3600)
    taken = Reservation.objects.get(pk=hold).expires_at

    answers = [extend(api, key, hold, {"ttl_seconds": 10}) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {moment(a.json()["expires_at"]) for a in answers} == {to_ms(taken)}
    assert Reservation.objects.get(pk=hold).expires_at == taken
    assert window(budget).reserved == Decimal("0.5")  # held once, whatever the repeats


def test_an_extended_hold_outlives_its_first_ttl(api, org, key, make_budget):
    budget = make_budget(org, "1")
    hold = reserve(api, key, ttl_seconds=1)
    assert extend(api, key, hold, {"ttl_seconds": 60}).status_code == 200

    # The test server sweeps every second: the first expiry passes unnoticed.
    time.sleep(2.5)

    assert Reservation.objects.get(pk=hold).status == "active"
    assert window(budget).reserved == Decimal("0.5")
    assert extend(api, key, hold, {"ttl_seconds": 60}).status_code == 200


@pytest.mark.parametrize("close", ["release", "settle"])
def test_a_closed_hold_is_409_saying_how_it_closed(api, org, key, make_budget, close):
    budget = make_budget(org, "1")
    hold = reserve(api, key)
    if close == "release":
        api.post(f"/v1/budget/reservations/{hold}/release", headers=auth(key))
        status = "released"
    else:
        event = {"id": "e-1", "team": "search", "model": "m", "cost_usd": "0.1"}
        api.post("/v1/events", json={**event, "reservation_id": hold}, headers=auth(key))
        status = "settled"
    expires = Reservation.objects.get(pk=hold).expires_at

    error = assert_error(extend(api, key, hold, {"ttl_seconds": 60}), 409, "reservation_closed")

    assert error["status"] == status
    assert status in error["message"]
    held = Reservation.objects.get(pk=hold)
    assert (held.status, held.expires_at) == (status, expires)
    assert window(budget).reserved == 0


def test_a_hold_past_its_expiry_is_expired_not_revived(api, org, key, make_budget):
    budget = make_budget(org, "1")
    other = reserve(api, key, "0.25")  # keeps `reserved` above zero: a double unhold shows
    hold = reserve(api, key)
    # Its time is up, and no sweeper has reached it yet.
    Reservation.objects.filter(pk=hold).update(expires_at=timezone.now() - timedelta(seconds=5))

    error = assert_error(extend(api, key, hold, {"ttl_seconds": 600}), 409, "reservation_closed")

    assert error["status"] == "expired"
    assert Reservation.objects.get(pk=hold).status == "expired"
    assert window(budget).reserved == Decimal("0.25")
    # Answered the same way again, and the hold is not taken back twice.
    again = assert_error(extend(api, key, hold), 409, "reservation_closed")
    assert again["status"] == "expired"
    assert window(budget).reserved == Decimal("0.25")
    assert Reservation.objects.get(pk=other).status == "active"


def test_unknown_malformed_and_other_orgs_ids_are_404(api, org, key, make_org, make_key):
    hold = reserve(api, key)
    intruder = make_key(make_org("other"))
    expires = Reservation.objects.get(pk=hold).expires_at

    for reservation_id, caller in [
        (str(uuid.uuid4()), key),
        (str(id_made_at(timezone.now())), key),
        ("not-a-uuid", key),
        (hold, intruder),
    ]:
        assert_error(extend(api, caller, reservation_id), 404, "not_found")
    assert Reservation.objects.get(pk=hold).expires_at == expires


def test_an_id_older_than_the_retention_is_409_closed(api, key):
    old = id_made_at(timezone.now() - timedelta(days=400))

    error = assert_error(extend(api, key, old), 409, "reservation_closed")

    assert error["status"] == "closed"


@pytest.mark.parametrize("ttl", [0, 3601, -1, "60", True, 1.5, [60]])
def test_a_bad_ttl_is_422_naming_it_and_changes_nothing(api, org, key, make_budget, ttl):
    make_budget(org, "1")
    hold = reserve(api, key)
    expires = Reservation.objects.get(pk=hold).expires_at

    assert_error(extend(api, key, hold, {"ttl_seconds": ttl}), 422, "invalid_field", "ttl_seconds")

    assert Reservation.objects.get(pk=hold).expires_at == expires


@pytest.mark.parametrize(
    "content", [b"{", b"[]", b"null", b'{"ttl_seconds": 60, "ttl_seconds": 1}']
)
def test_a_malformed_body_is_400(api, org, key, make_budget, content):
    make_budget(org, "1")
    hold = reserve(api, key)
    expires = Reservation.objects.get(pk=hold).expires_at

    response = api.post(
        f"/v1/budget/reservations/{hold}/extend",
        content=content,
        headers={**auth(key), "Content-Type": "application/json"},
    )

    assert_error(response, 400, "malformed_json")
    assert Reservation.objects.get(pk=hold).expires_at == expires


def test_extend_needs_a_key_and_post(api, org, key, make_budget):
    make_budget(org, "1")
    hold = reserve(api, key)

    assert_error(api.post(f"/v1/budget/reservations/{hold}/extend"), 401, "unauthenticated")
    wrong = api.get(f"/v1/budget/reservations/{hold}/extend", headers=auth(key))
    assert_error(wrong, 405, "method_not_allowed")
