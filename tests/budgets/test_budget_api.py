"""Managing budgets through the API (admin keys): PUT creates or replaces one
budget and takes effect on the next decision, GET lists every budget with its
current window, DELETE removes it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from budgets.models import Budget, BudgetWindow, EndUser, Team
from tests.conftest import assert_error, auth


def put(api, admin_key, path: str, **body):
    return api.put(f"/v1/budgets/{path}", json=body, headers=auth(admin_key))


def reserve(api, key, amount, team="search", user="alice"):
    body = {"team": team, "user": user, "estimated_cost_usd": amount}
    return api.post("/v1/budget/reservations", json=body, headers=auth(key))


def test_put_creates_a_budget(api, org, admin_key):
    response = put(api, admin_key, "team/search/day", limit_usd="50", soft_limit_pct=70)

    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("scope", "id", "period", "limit_usd", "soft_limit_pct")} == {
        "scope": "team",
        "id": "search",
        "period": "day",
        "limit_usd": "50",
        "soft_limit_pct": 70,
    }
    assert body["enforce"] is True
    assert (body["spent_usd"], body["reserved_usd"], body["remaining_usd"]) == ("0", "0", "50")
    assert body["resets_at"].endswith("Z")
    budget = Budget.objects.get()
    assert (budget.scope, budget.team.slug, budget.period) == ("team", "search", "day")
    assert (budget.limit_usd, budget.soft_limit_pct, budget.enforce) == (Decimal("50"), 70, True)


def test_put_defaults_soft_limit_and_enforce(api, org, admin_key):
    response = put(api, admin_key, "org/acme/month", limit_usd=1000)

    assert response.status_code == 200, response.text
    assert response.json()["soft_limit_pct"] == 80
    assert response.json()["enforce"] is True
    assert response.json()["limit_usd"] == "1000"


def test_total_budget_never_resets(api, org, admin_key):
    response = put(api, admin_key, "user/alice/total", limit_usd="5")

    assert response.status_code == 200, response.text
    assert response.json()["resets_at"] is None


def test_put_again_replaces_the_budget(api, org, admin_key):
    put(api, admin_key, "team/search/day", limit_usd="50")

    response = put(
        api, admin_key, "team/search/day", limit_usd="0.0000000001", soft_limit_pct=0, enforce=False
    )

    assert response.status_code == 200, response.text
    assert response.json()["limit_usd"] == "0.0000000001"
    assert response.json()["enforce"] is False
    budget = Budget.objects.get()
    assert (budget.limit_usd, budget.soft_limit_pct, budget.enforce) == (
        Decimal("0.0000000001"),
        0,
        False,
    )


def test_org_budget_put_twice_is_still_one_row(api, org, admin_key):
    # Org budgets have NULL team and user: the upsert must still find the row.
    put(api, admin_key, "org/acme/day", limit_usd="50")
    put(api, admin_key, "org/acme/day", limit_usd="60")

    assert list(Budget.objects.values_list("scope", "limit_usd")) == [("org", Decimal("60"))]


def test_same_subject_with_other_periods_are_separate_budgets(api, org, admin_key):
    for period in ("day", "week", "month", "total"):
        assert put(api, admin_key, f"user/alice/{period}", limit_usd="1").status_code == 200

    assert sorted(Budget.objects.values_list("period", flat=True)) == [
        "day",
        "month",
        "total",
        "week",
    ]


def test_replacing_a_budget_takes_effect_on_the_next_decision(api, org, key, admin_key):
    put(api, admin_key, "team/search/day", limit_usd="1")
    assert reserve(api, key, "0.6").status_code == 201
    assert reserve(api, key, "0.6").status_code == 402

    put(api, admin_key, "team/search/day", limit_usd="2")
    assert reserve(api, key, "0.6").status_code == 201

    put(api, admin_key, "team/search/day", limit_usd="1.5")
    denied = reserve(api, key, "0.4")
    assert denied.status_code == 402
    assert denied.json()["error"]["limit_usd"] == "1.5"
    assert denied.json()["error"]["reserved_usd"] == "1.2"

    put(api, admin_key, "team/search/day", limit_usd="1.5", enforce=False)
    assert reserve(api, key, "5").status_code == 201


def test_replacing_a_budget_keeps_its_current_window(api, org, key, admin_key):
    put(api, admin_key, "org/acme/day", limit_usd="10")
    reserve(api, key, "4")

    response = put(api, admin_key, "org/acme/day", limit_usd="5")

    assert response.json()["reserved_usd"] == "4"
    assert response.json()["remaining_usd"] == "1"
    assert BudgetWindow.objects.get().reserved == Decimal("4")


def test_get_lists_every_budget_with_its_current_window(api, org, key, admin_key, make_budget):
    make_budget(org, "100")
    make_budget(org, "10", scope="team", team="search", period="month", soft_limit_pct=50)
    make_budget(org, "1", scope="user", user="alice", period="week", enforce=False)
    make_budget(org, "3", scope="team", team="research")
    assert reserve(api, key, "0.25").status_code == 201

    response = api.get("/v1/budgets", headers=auth(admin_key))

    assert response.status_code == 200
    listed = {(b["scope"], b["id"], b["period"]): b for b in response.json()["budgets"]}
    assert list(listed) == [
        ("org", "acme", "day"),
        ("team", "research", "day"),
        ("team", "search", "month"),
        ("user", "alice", "week"),
    ]
    for subject in [("org", "acme", "day"), ("team", "search", "month"), ("user", "alice", "week")]:
        assert listed[subject]["reserved_usd"] == "0.25"
        assert listed[subject]["spent_usd"] == "0"
    assert listed[("team", "research", "day")]["reserved_usd"] == "0"
    assert listed[("team", "search", "month")]["remaining_usd"] == "9.75"
    assert listed[("team", "search", "month")]["soft_limit_pct"] == 50
    assert listed[("user", "alice", "week")]["enforce"] is False
    assert listed[("user", "alice", "week")]["used_pct"] == "25.0"


def test_get_lists_nothing_for_an_org_without_budgets(api, org, admin_key):
    response = api.get("/v1/budgets", headers=auth(admin_key))

    assert response.status_code == 200
    assert response.json() == {"budgets": []}


def test_delete_removes_the_budget_then_404(api, org, key, admin_key):
    put(api, admin_key, "team/search/day", limit_usd="1")
    assert reserve(api, key, "1").status_code == 201

    first = api.delete("/v1/budgets/team/search/day", headers=auth(admin_key))
    second = api.delete("/v1/budgets/team/search/day", headers=auth(admin_key))

    assert first.status_code == 204
    assert first.content == b""
    assert_error(second, 404, "not_found")
    assert not Budget.objects.exists()
    # With the budget gone nothing limits the team any more.
    assert reserve(api, key, "1").status_code == 201
    assert api.get("/v1/budgets", headers=auth(admin_key)).json()["budgets"] == []


@pytest.mark.parametrize(
    "path",
    [
        "org/acme/week",  # another period of an existing subject
        "team/search/day",  # a team with no budget
        "team/nobody/day",  # a team that is not registered
        "user/alice/day",
        "org/globex/day",  # not this org's slug
    ],
)
def test_delete_of_an_absent_budget_is_404(api, org, admin_key, make_budget, path):
    make_budget(org, "5")
    Team.objects.create(org=org, slug="search")

    response = api.delete(f"/v1/budgets/{path}", headers=auth(admin_key))

    assert_error(response, 404, "not_found")
    assert Budget.objects.count() == 1


def test_put_org_budget_with_another_slug_is_404(api, org, admin_key, make_org):
    make_org("globex")

    response = put(api, admin_key, "org/globex/day", limit_usd="5")

    assert_error(response, 404, "not_found")
    assert not Budget.objects.exists()


def test_put_for_an_unknown_team_in_a_strict_org_is_404(api, make_org, make_key):
    strict = make_org("strictco", strict=True)
    admin_key = make_key(strict, admin=True)
    Team.objects.create(org=strict, slug="known")

    unknown_team = put(api, admin_key, "team/nope/day", limit_usd="5")
    unknown_user = put(api, admin_key, "user/nobody/day", limit_usd="5")
    known = put(api, admin_key, "team/known/day", limit_usd="5")

    assert_error(unknown_team, 404, "not_found")
    assert_error(unknown_user, 404, "not_found")
    assert known.status_code == 200, known.text
    assert not Team.objects.filter(slug="nope").exists()
    assert not EndUser.objects.exists()
    assert list(Budget.objects.values_list("team__slug", flat=True)) == ["known"]


def test_put_for_an_unknown_team_in_a_non_strict_org_registers_it(api, org, key, admin_key):
    team = put(api, admin_key, "team/newteam/day", limit_usd="1")
    user = put(api, admin_key, "user/newuser/day", limit_usd="1")

    assert team.status_code == 200, team.text
    assert user.status_code == 200, user.text
    assert Team.objects.filter(org=org, slug="newteam").exists()
    assert EndUser.objects.filter(org=org, external_id="newuser").exists()
    # Requests for that team and user now meet the budgets.
    held = reserve(api, key, "0.5", team="newteam", user="newuser")
    assert {(b["scope"], b["id"]) for b in held.json()["budgets"]} == {
        ("team", "newteam"),
        ("user", "newuser"),
    }


def test_subject_ids_with_url_escapes_round_trip(api, org, key, admin_key):
    # Gateways' team ids are free text; the path segment is percent-decoded.
    response = put(api, admin_key, "team/search%20%26%20ads/day", limit_usd="1")

    assert response.status_code == 200, response.text
    assert response.json()["id"] == "search & ads"
    assert reserve(api, key, "2", team="search & ads").status_code == 402


def test_deleting_a_budget_under_an_active_hold_leaves_the_hold_releasable(
    api, org, key, admin_key
):
    put(api, admin_key, "org/acme/day", limit_usd="10")
    reservation_id = reserve(api, key, "4").json()["reservation_id"]

    deleted = api.delete("/v1/budgets/org/acme/day", headers=auth(admin_key))
    released = api.post(f"/v1/budget/reservations/{reservation_id}/release", headers=auth(key))

    assert deleted.status_code == 204, deleted.text
    assert not BudgetWindow.objects.exists()
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "released"
