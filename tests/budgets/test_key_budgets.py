"""Budgets on one API key (scope `key`) through the real server and database:
managed like the other scopes, held with the org's, team's and user's in the
same statement, settled by events, counted from the events the key records,
and seeded with the key's spend and holds when created mid-period."""

from __future__ import annotations

from decimal import Decimal

import pytest

from budgets.models import ApiKey, AuditEntry, Budget, BudgetWindow, Reservation
from tests.conftest import assert_error, auth
from tests.tracking.test_record_events import only_result, post, today_event, today_window
from tracking.models import RequestEvent


def lookup(secret: str) -> str:
    return secret.split("_")[1]


def reserve(api, key: str, amount: str, **extra):
    body = {"team": "search", "user": "alice", "estimated_cost_usd": amount, **extra}
    return api.post("/v1/budget/reservations", json=body, headers=auth(key))


def put(api, admin_key: str, lookup_id: str, limit: str, period: str = "day"):
    return api.put(
        f"/v1/budgets/key/{lookup_id}/{period}", json={"limit_usd": limit}, headers=auth(admin_key)
    )


@pytest.fixture
def app_key(org, make_key) -> str:
    return make_key(org)


def test_put_lists_and_deletes_a_key_budget_audited(api, org, admin_key, app_key):
    response = put(api, admin_key, lookup(app_key), "2.50")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["scope"], body["id"], body["period"], body["limit_usd"]) == (
        "key",
        lookup(app_key),
        "day",
        "2.5",
    )
    budget = Budget.objects.get(scope="key")
    assert budget.key == ApiKey.objects.get(lookup_id=lookup(app_key))
    listed = api.get("/v1/budgets", headers=auth(admin_key)).json()["budgets"]
    assert [(b["scope"], b["id"]) for b in listed] == [("key", lookup(app_key))]
    entry = AuditEntry.objects.get(object_type="budget")
    assert (entry.object_id, entry.action) == (f"key/{lookup(app_key)}/day", "create")

    deleted = api.delete(f"/v1/budgets/key/{lookup(app_key)}/day", headers=auth(admin_key))

    assert deleted.status_code == 204
    assert not Budget.objects.exists()
    again = api.delete(f"/v1/budgets/key/{lookup(app_key)}/day", headers=auth(admin_key))
    assert_error(again, 404, "not_found")


def test_a_key_budget_holds_and_denies_only_that_keys_requests(
    api, org, admin_key, app_key, make_key, make_budget
):
    org_budget = make_budget(org, "100")
    assert put(api, admin_key, lookup(app_key), "1").status_code == 200
    other = make_key(org)

    held = reserve(api, app_key, "0.75")

    assert held.status_code == 201, held.text
    assert {(b["scope"], b["id"]) for b in held.json()["budgets"]} == {
        ("org", org.slug),
        ("key", lookup(app_key)),
    }
    key_budget = Budget.objects.get(scope="key")
    assert today_window(key_budget).reserved == Decimal("0.75")
    assert Reservation.objects.get().key.lookup_id == lookup(app_key)

    denied = reserve(api, app_key, "0.5")

    error = assert_error(denied, 402, "budget_exceeded")
    assert (error["scope"], error["id"]) == ("key", lookup(app_key))
    assert today_window(key_budget).reserved == Decimal("0.75")
    assert today_window(org_budget).reserved == Decimal("0.75")
    # Another key of the org is not capped by it.
    assert reserve(api, other, "0.5").status_code == 201
    assert today_window(key_budget).reserved == Decimal("0.75")
    # Its status shows the key's budget to that key alone.
    mine = api.get("/v1/budget/status", headers=auth(app_key)).json()["budgets"]
    theirs = api.get("/v1/budget/status", headers=auth(other)).json()["budgets"]
    assert [b["scope"] for b in mine] == ["org", "key"]
    assert [b["scope"] for b in theirs] == ["org"]


def test_events_settle_the_holds_windows_and_count_toward_the_recording_keys_budget(
    api, org, admin_key, app_key, make_key
):
    assert put(api, admin_key, lookup(app_key), "1").status_code == 200
    key_budget = Budget.objects.get(scope="key")
    other = make_key(org)
    hold = reserve(api, app_key, "0.5").json()["reservation_id"]

    # Settled with the key that took it: the hold leaves, the cost is spent.
    result = only_result(
        post(api, app_key, today_event("k-1", reservation_id=hold, cost_usd="0.2"))
    )
    assert result["reservation"]["status"] == "settled"
    window = today_window(key_budget)
    assert (window.spent, window.reserved) == (Decimal("0.2"), Decimal("0"))
    # Recorded by another key: counts toward that key, not this one.
    only_result(post(api, other, today_event("k-2", cost_usd="0.3")))
    assert today_window(key_budget).spent == Decimal("0.2")
    only_result(post(api, app_key, today_event("k-3", cost_usd="0.05")))
    assert today_window(key_budget).spent == Decimal("0.25")
    assert RequestEvent.objects.get(event_id="k-2").key.lookup_id == lookup(other)


def test_a_hold_settled_by_an_event_of_another_key_leaves_the_windows_it_was_taken_on(
    api, org, admin_key, app_key, make_key
):
    assert put(api, admin_key, lookup(app_key), "1").status_code == 200
    key_budget = Budget.objects.get(scope="key")
    other = make_key(org)
    hold = reserve(api, app_key, "0.5").json()["reservation_id"]

    only_result(post(api, other, today_event("x-1", reservation_id=hold, cost_usd="0.2")))

    window = today_window(key_budget)
    assert (window.spent, window.reserved) == (Decimal("0"), Decimal("0"))


def test_a_key_budget_created_mid_period_starts_with_the_keys_spend_and_holds(
    api, org, admin_key, app_key, make_key
):
    other = make_key(org)
    only_result(post(api, app_key, today_event("m-1", cost_usd="0.4")))
    only_result(post(api, other, today_event("m-2", cost_usd="0.7")))
    assert reserve(api, app_key, "0.25").status_code == 201
    assert reserve(api, other, "0.5").status_code == 201

    body = put(api, admin_key, lookup(app_key), "1").json()

    assert (body["spent_usd"], body["reserved_usd"]) == ("0.4", "0.25")
    # The seeded hold leaves the new window when it is released.
    hold = Reservation.objects.get(key__lookup_id=lookup(app_key))
    released = api.post(f"/v1/budget/reservations/{hold.pk}/release", headers=auth(app_key))
    assert released.status_code == 200, released.text
    assert today_window(Budget.objects.get(scope="key")).reserved == Decimal("0")


@pytest.mark.parametrize(
    ("path", "status", "code", "field"),
    [
        ("/v1/budgets/key/not-a-key/day", 422, "invalid_field", "id"),
        ("/v1/budgets/key/ABCDEF012345/day", 422, "invalid_field", "id"),
        ("/v1/budgets/key/000000000000/day", 404, "not_found", None),
        ("/v1/budgets/customer/acme/day", 422, "invalid_field", "scope"),
    ],
)
def test_bad_key_budget_paths(api, org, admin_key, path, status, code, field):
    response = api.put(path, json={"limit_usd": "1"}, headers=auth(admin_key))

    assert_error(response, status, code, field)
    assert not Budget.objects.exists()
    assert not BudgetWindow.objects.exists()


def test_a_key_of_another_org_is_not_found(api, org, admin_key, make_org, make_key):
    foreign = make_key(make_org())

    assert_error(put(api, admin_key, lookup(foreign), "1"), 404, "not_found")
    assert not Budget.objects.exists()


def test_a_team_limited_admin_key_may_not_manage_key_budgets(api, org, app_key, make_key):
    team_admin = make_key(org, team="search", admin=True)

    assert_error(put(api, team_admin, lookup(app_key), "1"), 403, "forbidden")
