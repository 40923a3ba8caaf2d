"""Reservation semantics through the real server: tiers, periods, soft limits,
monitor-only budgets, release and expiry."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from budgets.models import BudgetWindow, EndUser, Reservation, Team
from tests.conftest import auth


def reserve(api, key, amount, team="search", user="alice", **extra):
    body = {"team": team, "user": user, "estimated_cost_usd": amount, **extra}
    return api.post("/v1/budget/reservations", json=body, headers=auth(key))


def window(budget) -> BudgetWindow:
    return BudgetWindow.objects.get(budget=budget)


def test_reservation_holds_every_tier_at_once(api, org, key, make_budget):
    org_budget = make_budget(org, "100")
    team_budget = make_budget(org, "10", scope="team", team="search", period="month")
    user_budget = make_budget(org, "1", scope="user", user="alice", period="week")

    response = reserve(api, key, "0.25")

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["amount_usd"] == "0.25"
    assert {(b["scope"], b["id"], b["period"]) for b in body["budgets"]} == {
        ("org", "acme", "day"),
        ("team", "search", "month"),
        ("user", "alice", "week"),
    }
    for budget in (org_budget, team_budget, user_budget):
        assert window(budget).reserved == Decimal("0.25")
        assert window(budget).spent == 0
    reservation = Reservation.objects.get(pk=body["reservation_id"])
    assert reservation.status == "active"
    assert reservation.amount == Decimal("0.25")


def test_tightest_tier_denies_and_nothing_is_held(api, org, key, make_budget):
    org_budget = make_budget(org, "100")
    user_budget = make_budget(org, "1", scope="user", user="alice")
    assert reserve(api, key, "0.75").status_code == 201

    response = reserve(api, key, "0.5")

    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert (error["scope"], error["id"], error["period"]) == ("user", "alice", "day")
    assert (error["limit_usd"], error["reserved_usd"], error["spent_usd"]) == ("1", "0.75", "0")
    assert error["remaining_usd"] == "0.25"
    assert error["message"] == (
        "The user budget 'alice' (day) has $0.25 left of $1.00 ($0.00 spent, $0.75 held); "
        "this request needs $0.50."
    )
    assert error["resets_at"].endswith("Z")
    # All or nothing: the org window did not take the denied hold either.
    assert window(org_budget).reserved == Decimal("0.75")
    assert window(user_budget).reserved == Decimal("0.75")
    assert Reservation.objects.count() == 1


def test_exact_fill_is_allowed_and_one_cent_more_is_not(api, org, key, make_budget):
    make_budget(org, "1.00")
    assert reserve(api, key, "0.40").status_code == 201
    assert reserve(api, key, "0.60").status_code == 201
    assert reserve(api, key, "0.01").status_code == 402


def test_other_teams_and_users_budgets_do_not_apply(api, org, key, make_budget):
    make_budget(org, "1", scope="team", team="research")
    make_budget(org, "1", scope="user", user="bob")

    response = reserve(api, key, "5", team="search", user="alice")

    assert response.status_code == 201
    assert response.json()["budgets"] == []


def test_check_is_read_only_and_reports_blocking_budget(api, org, key, make_budget):
    budget = make_budget(org, "1", scope="team", team="search")
    reserve(api, key, "0.9")

    response = api.post(
        "/v1/budget/check",
        headers=auth(key),
        json={"team": "search", "user": "alice", "estimated_cost_usd": 0.2},
    )

    assert response.status_code == 200
    body = response.json()
    assert body["allowed"] is False
    assert body["blocked_by"] == {"scope": "team", "id": "search", "model": None, "period": "day"}
    assert body["estimated_cost_usd"] == "0.2"
    assert window(budget).reserved == Decimal("0.9")
    assert Reservation.objects.count() == 1


def test_check_allows_within_limit(api, org, key, make_budget):
    make_budget(org, "10")
    response = api.post(
        "/v1/budget/check",
        headers=auth(key),
        json={"team": "search", "user": "alice", "estimated_cost_usd": "1"},
    )
    assert response.json()["allowed"] is True
    assert response.json()["blocked_by"] is None
    assert response.json()["budgets"][0]["remaining_usd"] == "10"


def test_soft_limit_warning(api, org, key, make_budget):
    make_budget(org, "10", scope="team", team="search", soft_limit_pct=50)

    below = reserve(api, key, "4")
    above = reserve(api, key, "2")

    assert below.json()["warnings"] == []
    assert above.json()["warnings"] == [
        {
            "scope": "team",
            "id": "search",
            "model": None,
            "period": "day",
            "used_pct": "60.0",
            "enforce": True,
        }
    ]


def test_monitor_only_budget_never_denies_but_warns(api, org, key, make_budget):
    budget = make_budget(org, "1", enforce=False)

    response = reserve(api, key, "3")

    assert response.status_code == 201
    assert response.json()["warnings"][0]["used_pct"] == "300.0"
    assert window(budget).reserved == Decimal("3")


def test_unknown_team_and_user_are_registered_on_first_sight(api, org, key):
    assert reserve(api, key, "0.1", team="newteam", user="newuser").status_code == 201
    assert Team.objects.filter(org=org, slug="newteam").exists()
    assert EndUser.objects.filter(org=org, external_id="newuser").exists()


def test_strict_org_rejects_unknown_team_and_user(api, make_org, make_key):
    strict = make_org("strictco", strict=True)
    key = make_key(strict)
    Team.objects.create(org=strict, slug="known")

    unknown_team = reserve(api, key, "0.1", team="nope", user=None)
    unknown_user = reserve(api, key, "0.1", team="known", user="nobody")
    known = reserve(api, key, "0.1", team="known", user=None)

    assert unknown_team.status_code == 404
    assert unknown_team.json()["error"] == {
        "code": "not_found",
        "field": "team",
        "message": unknown_team.json()["error"]["message"],
    }
    assert unknown_user.status_code == 404
    assert unknown_user.json()["error"]["field"] == "user"
    assert known.status_code == 201
    assert not Team.objects.filter(slug="nope").exists()


def test_release_returns_the_hold_and_is_idempotent(api, org, key, make_budget):
    budget = make_budget(org, "1")
    reservation_id = reserve(api, key, "0.6").json()["reservation_id"]

    first = api.post(f"/v1/budget/reservations/{reservation_id}/release", headers=auth(key))
    second = api.post(f"/v1/budget/reservations/{reservation_id}/release", headers=auth(key))

    assert first.status_code == 200 and first.json()["released"] is True
    assert second.status_code == 200 and second.json()["status"] == "released"
    assert window(budget).reserved == 0
    assert reserve(api, key, "1").status_code == 201


def test_release_of_unknown_reservation_is_404(api, key):
    missing = api.post(
        "/v1/budget/reservations/6f1c5f3e-8a59-4f0b-9a59-000000000000/release", headers=auth(key)
    )
    garbage = api.post("/v1/budget/reservations/not-a-uuid/release", headers=auth(key))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert garbage.status_code == 404


def test_expired_reservation_stops_counting(api, org, key, make_budget):
    budget = make_budget(org, "1")
    assert reserve(api, key, "1", ttl_seconds=1).status_code == 201
    assert reserve(api, key, "0.5").status_code == 402

    # The test server sweeps every second; production every 10 s (< 60 s).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and window(budget).reserved != 0:
        time.sleep(0.2)

    assert window(budget).reserved == 0
    assert Reservation.objects.get().status == "expired"
    assert reserve(api, key, "0.5").status_code == 201


def test_estimate_is_priced_for_the_model(api, org, key, make_budget):
    from tracking.models import Price

    # An estimate with no price is refused under "zero" (see
    # tests/tracking/test_unpriced_policy.py for the other policies).
    org.unpriced_policy = "zero"
    org.save(update_fields=["unpriced_policy"])

    Price.objects.create(
        provider="openai",
        model="gpt-4o",
        input_per_token=Decimal("0.0000025"),
        output_per_token=Decimal("0.00001"),
    )
    make_budget(org, "1")

    response = reserve(
        api, key, None, model="gpt-4o", estimate={"input_tokens": 1200, "max_output_tokens": 800}
    )
    unpriced = reserve(
        api, key, None, model="mystery-1", estimate={"input_tokens": 1, "max_output_tokens": 1}
    )

    assert response.status_code == 201, response.text
    assert response.json()["amount_usd"] == "0.011"
    assert unpriced.status_code == 422
    assert unpriced.json()["error"]["field"] == "model"


def test_status_lists_the_callers_budgets(api, org, key, make_budget):
    make_budget(org, "5")
    make_budget(org, "2", scope="team", team="search")
    reserve(api, key, "1")

    response = api.get(
        "/v1/budget/status", params={"team": "search", "user": "alice"}, headers=auth(key)
    )

    assert response.status_code == 200
    budgets = {b["scope"]: b for b in response.json()["budgets"]}
    assert budgets["org"]["reserved_usd"] == "1"
    assert budgets["team"]["remaining_usd"] == "1"


@pytest.mark.parametrize("amount", ["0.0000000001", "123456.7890123456"])
def test_money_is_exact(api, org, key, make_budget, amount):
    budget = make_budget(org, "1000000")
    reserve(api, key, amount)
    # More than 10 decimal places round up: a hold is never smaller than asked.
    expected = Decimal(amount).quantize(Decimal("1e-10"), rounding="ROUND_CEILING")
    assert window(budget).reserved == expected
