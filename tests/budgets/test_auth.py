"""Authentication and authorization through the real server: who may call the
hot path, which team a team-limited key may act for, admin-only budget
management, and that one organization never sees another's data."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from budgets.audit import SYSTEM
from budgets.models import ApiKey, Budget, BudgetWindow, Reservation
from budgets.services import api_key_revoke
from tests.conftest import assert_error, auth

CHECK = "/v1/budget/check"
RESERVE = "/v1/budget/reservations"
BODY = {"team": "search", "user": "alice", "estimated_cost_usd": "0.1"}


def api_key_row(key: str) -> ApiKey:
    return ApiKey.objects.get(lookup_id=key.split("_")[1])


# --- 401 unauthenticated ----------------------------------------------------------------


def test_missing_authorization_header_is_401(api, key):
    response = api.post(CHECK, json=BODY)

    assert_error(response, 401, "unauthenticated")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("Bearer", id="bearer-without-key"),
        pytest.param("Bearer Bearer {key}", id="doubled-scheme"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("Token {key}", id="other-scheme"),
        pytest.param("{key}", id="key-without-scheme"),
        pytest.param("Bearer{key}", id="no-space"),
    ],
)
def test_malformed_authorization_header_is_401(api, key, header):
    response = api.post(CHECK, json=BODY, headers={"Authorization": header.format(key=key)})

    assert_error(response, 401, "unauthenticated")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("tg_0123456789ab_" + "A" * 43, id="well-formed-unknown"),
        pytest.param("sk-" + "A" * 48, id="foreign-format"),
        pytest.param("tg_short_" + "A" * 43, id="short-lookup-id"),
        pytest.param("tg_0123456789ab_", id="no-secret"),
    ],
)
def test_unknown_key_is_401(api, key, token):
    response = api.post(CHECK, json=BODY, headers=auth(token))

    assert_error(response, 401, "unauthenticated")


def test_real_lookup_id_with_a_wrong_secret_is_401(api, key):
    lookup_id = api_key_row(key).lookup_id
    forged = f"tg_{lookup_id}_{'A' * 43}"
    assert forged != key

    response = api.post(CHECK, json=BODY, headers=auth(forged))

    assert_error(response, 401, "unauthenticated")
    # A failed attempt is not a use of the key.
    assert api_key_row(key).last_used_at is None


def test_wrong_secret_is_401_even_while_the_real_key_is_cached(api, key):
    assert api.post(CHECK, json=BODY, headers=auth(key)).status_code == 200
    forged = f"tg_{api_key_row(key).lookup_id}_{'A' * 43}"

    response = api.post(CHECK, json=BODY, headers=auth(forged))

    assert_error(response, 401, "unauthenticated")


def test_scheme_is_case_insensitive(api, key):
    response = api.post(CHECK, json=BODY, headers={"Authorization": f"bearer {key}"})

    assert response.status_code == 200, response.text


def test_key_revoked_before_first_use_is_401(api, key):
    api_key_revoke(key=api_key_row(key), actor=SYSTEM)

    response = api.post(CHECK, json=BODY, headers=auth(key))

    error = assert_error(response, 401, "unauthenticated")
    assert "revoked" in error["message"]


def test_key_revoked_after_use_stops_working_within_the_cache_ttl(api, key):
    assert api.post(CHECK, json=BODY, headers=auth(key)).status_code == 200

    api_key_revoke(key=api_key_row(key), actor=SYSTEM)
    time.sleep(1.5)  # the test server caches verified keys for 1 s

    assert_error(api.post(CHECK, json=BODY, headers=auth(key)), 401, "unauthenticated")
    assert_error(api.post(RESERVE, json=BODY, headers=auth(key)), 401, "unauthenticated")
    assert not Reservation.objects.exists()


def test_authentication_comes_before_the_body_is_parsed(api, key):
    response = api.post(CHECK, content=b"not json", headers={"Content-Type": "application/json"})

    assert_error(response, 401, "unauthenticated")


# --- How keys are stored ------------------------------------------------------------------


def test_key_row_stores_only_a_hash_of_the_secret(key):
    row = ApiKey.objects.filter(lookup_id=key.split("_")[1]).values().get()

    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["key_hash"] != key
    secret_part = key.split("_", 2)[2]
    for column, value in row.items():
        assert key not in str(value), column
        assert secret_part not in str(value), column


def test_last_used_at_is_set_when_the_key_is_used(api, key):
    assert api_key_row(key).last_used_at is None
    before = timezone.now()

    assert api.post(CHECK, json=BODY, headers=auth(key)).status_code == 200

    last_used_at = api_key_row(key).last_used_at
    assert last_used_at is not None
    # Database and test clocks are the same machine's; allow a little skew.
    assert last_used_at >= before - timedelta(seconds=1)


# --- 403 for a team-limited key ----------------------------------------------------------


@pytest.fixture
def search_key(org, make_key) -> str:
    return make_key(org, team="search")


@pytest.mark.parametrize("path", [CHECK, RESERVE])
def test_team_limited_key_acting_on_another_team_is_403(api, search_key, path):
    response = api.post(path, json={**BODY, "team": "research"}, headers=auth(search_key))

    assert_error(response, 403, "forbidden", "team")
    assert not Reservation.objects.exists()


def test_team_limited_key_cannot_read_another_teams_status(api, search_key):
    response = api.get("/v1/budget/status", params={"team": "research"}, headers=auth(search_key))

    assert_error(response, 403, "forbidden", "team")


def test_team_limited_key_acts_on_its_own_team(api, org, search_key, make_budget):
    budget = make_budget(org, "1", scope="team", team="search")

    response = api.post(RESERVE, json=BODY, headers=auth(search_key))

    assert response.status_code == 201, response.text
    assert [(b["scope"], b["id"]) for b in response.json()["budgets"]] == [("team", "search")]
    assert BudgetWindow.objects.get(budget=budget).reserved == Decimal("0.1")


def test_team_limited_key_without_a_team_uses_its_own(api, org, search_key, make_budget):
    budget = make_budget(org, "1", scope="team", team="search")
    body = {"user": "alice", "estimated_cost_usd": "0.2"}

    held = api.post(RESERVE, json=body, headers=auth(search_key))
    checked = api.post(CHECK, json=body, headers=auth(search_key))
    status = api.get("/v1/budget/status", headers=auth(search_key))

    assert held.status_code == 201, held.text
    assert Reservation.objects.get().team.slug == "search"
    assert BudgetWindow.objects.get(budget=budget).reserved == Decimal("0.2")
    assert checked.json()["budgets"][0]["id"] == "search"
    assert status.json()["budgets"][0]["reserved_usd"] == "0.2"


def test_org_wide_key_may_act_on_any_team(api, key):
    for team in ("search", "research"):
        response = api.post(RESERVE, json={**BODY, "team": team}, headers=auth(key))
        assert response.status_code == 201, response.text


# --- Another organization's data ----------------------------------------------------------


@pytest.fixture
def other_org(make_org):
    return make_org("globex")


@pytest.fixture
def other_key(other_org, make_key) -> str:
    return make_key(other_org)


def test_releasing_another_orgs_reservation_is_404_and_keeps_the_hold(
    api, org, key, other_key, make_budget
):
    budget = make_budget(org, "1")
    reservation_id = api.post(RESERVE, json=BODY, headers=auth(key)).json()["reservation_id"]
    release = f"{RESERVE}/{reservation_id}/release"

    response = api.post(release, headers=auth(other_key))

    assert_error(response, 404, "not_found")
    assert Reservation.objects.get(pk=reservation_id).status == "active"
    assert BudgetWindow.objects.get(budget=budget).reserved == Decimal("0.1")
    # The owner still can: the 404 was about the key, not the reservation.
    assert api.post(release, headers=auth(key)).status_code == 200
    assert BudgetWindow.objects.get(budget=budget).reserved == 0


def test_orgs_never_see_each_others_budgets(api, org, other_org, admin_key, make_key, make_budget):
    make_budget(org, "100")
    make_budget(org, "10", scope="team", team="search")
    make_budget(org, "1", scope="user", user="alice")
    make_budget(other_org, "7", scope="team", team="search")
    other_admin = make_key(other_org, admin=True)
    api.post(RESERVE, json=BODY, headers=auth(admin_key))

    listed = api.get("/v1/budgets", headers=auth(other_admin))
    status = api.get(
        "/v1/budget/status", params={"team": "search", "user": "alice"}, headers=auth(other_admin)
    )
    checked = api.post(CHECK, json=BODY, headers=auth(other_admin))

    assert listed.status_code == 200
    assert [(b["scope"], b["id"], b["limit_usd"]) for b in listed.json()["budgets"]] == [
        ("team", "search", "7")
    ]
    assert listed.json()["budgets"][0]["reserved_usd"] == "0"
    assert [(b["scope"], b["limit_usd"]) for b in status.json()["budgets"]] == [("team", "7")]
    assert [(b["scope"], b["limit_usd"]) for b in checked.json()["budgets"]] == [("team", "7")]
    # And the first org still sees all of its own.
    own = api.get("/v1/budgets", headers=auth(admin_key)).json()["budgets"]
    assert [(b["scope"], b["id"]) for b in own] == [
        ("org", "acme"),
        ("team", "search"),
        ("user", "alice"),
    ]


def test_admin_key_cannot_change_another_orgs_budgets(api, org, other_org, make_key, make_budget):
    make_budget(org, "100")
    make_budget(org, "10", scope="team", team="search")
    other_admin = make_key(other_org, admin=True)

    put_org = api.put(
        "/v1/budgets/org/acme/day", json={"limit_usd": "1"}, headers=auth(other_admin)
    )
    delete_org = api.delete("/v1/budgets/org/acme/day", headers=auth(other_admin))
    delete_team = api.delete("/v1/budgets/team/search/day", headers=auth(other_admin))

    assert_error(put_org, 404, "not_found")
    assert_error(delete_org, 404, "not_found")
    assert_error(delete_team, 404, "not_found")
    assert sorted(Budget.objects.filter(org=org).values_list("limit_usd", flat=True)) == [
        Decimal("10"),
        Decimal("100"),
    ]
    assert not Budget.objects.filter(org=other_org).exists()


# --- Admin-only budget management ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/budgets"),
        ("PUT", "/v1/budgets/org/acme/day"),
        ("PUT", "/v1/budgets/team/search/day"),
        ("DELETE", "/v1/budgets/org/acme/day"),
    ],
)
def test_non_admin_key_cannot_manage_budgets(api, org, key, make_budget, method, path):
    make_budget(org, "100")

    response = api.request(method, path, json={"limit_usd": "5"}, headers=auth(key))

    assert_error(response, 403, "forbidden")
    assert list(Budget.objects.values_list("scope", "limit_usd")) == [("org", Decimal("100"))]


def test_team_limited_admin_key_manages_only_its_own_teams_budgets(api, org, make_key, make_budget):
    make_budget(org, "100")
    make_budget(org, "10", scope="team", team="research")
    team_admin = make_key(org, team="search", admin=True)

    own = api.put("/v1/budgets/team/search/day", json={"limit_usd": "5"}, headers=auth(team_admin))
    other_team = api.put(
        "/v1/budgets/team/research/day", json={"limit_usd": "5"}, headers=auth(team_admin)
    )
    whole_org = api.delete("/v1/budgets/org/acme/day", headers=auth(team_admin))
    listed = api.get("/v1/budgets", headers=auth(team_admin))

    assert own.status_code == 200, own.text
    assert_error(other_team, 403, "forbidden")
    assert_error(whole_org, 403, "forbidden")
    assert [(b["scope"], b["id"]) for b in listed.json()["budgets"]] == [("team", "search")]
    assert Budget.objects.get(team__slug="research").limit_usd == Decimal("10")
    assert Budget.objects.filter(scope="org").exists()
