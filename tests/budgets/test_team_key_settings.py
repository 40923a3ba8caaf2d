"""GET and PATCH /v1/teams/{slug} and /v1/keys/{lookup_id}: a team's and a
key's caps and model allow-lists through the API, validated as a whole,
audited, and applied from the next request."""

from __future__ import annotations

import pytest

from budgets.models import ApiKey, AuditEntry, Team
from tests.conftest import assert_error, auth


def lookup(secret: str) -> str:
    return secret.split("_")[1]


def reserve(api, key: str, model: str, team: str = "search"):
    body = {"team": team, "model": model, "estimated_cost_usd": "0.50"}
    return api.post("/v1/budget/reservations", json=body, headers=auth(key))


@pytest.fixture
def team(org) -> Team:
    return Team.objects.create(org=org, slug="search")


def test_patch_team_sets_its_list_and_cap_audited_and_the_next_request_obeys(
    api, org, team, key, admin_key
):
    assert reserve(api, key, "claude-3-haiku").status_code == 201

    response = api.patch(
        "/v1/teams/search",
        json={"allowed_models": ["gpt-4o", "Claude-Opus-*"], "max_request_usd": "0.25"},
        headers=auth(admin_key),
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "team": {
            "slug": "search",
            "name": "",
            "max_request_usd": "0.25",
            "allowed_models": ["claude-opus-*", "gpt-4o"],
        }
    }
    entry = AuditEntry.objects.get(object_type="team", action="update")
    assert entry.object_id == "search"
    assert entry.actor_label.startswith(f"key {lookup(admin_key)}")
    assert entry.old["allowed_models"] == [] and entry.old["max_request_usd"] is None
    assert entry.new["max_request_usd"] == "0.25"
    assert_error(reserve(api, key, "claude-3-haiku"), 403, "model_not_allowed", "model")
    assert_error(reserve(api, key, "claude-opus-4"), 402, "request_too_expensive")
    assert api.get("/v1/teams/search", headers=auth(key)).json()["team"]["max_request_usd"] == (
        "0.25"
    )


def test_patch_key_sets_its_list_audited(api, org, key, admin_key):
    response = api.patch(
        f"/v1/keys/{lookup(key)}",
        json={"allowed_models": ["gpt-4o"], "name": "summarizer"},
        headers=auth(admin_key),
    )

    assert response.status_code == 200, response.text
    body = response.json()["key"]
    assert body["lookup_id"] == lookup(key)
    assert (body["name"], body["allowed_models"], body["revoked"]) == (
        "summarizer",
        ["gpt-4o"],
        False,
    )
    assert "key_hash" not in body
    entry = AuditEntry.objects.get(object_type="api_key", action="update")
    assert (entry.old["name"], entry.new["name"]) == ("", "summarizer")
    refused = reserve(api, key, "claude-3-haiku")
    assert_error(refused, 403, "model_not_allowed", "model")
    assert reserve(api, key, "gpt-4o").status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"allowed_models": ["*"]}, "allowed_models"),
        ({"allowed_models": "gpt-4o"}, "allowed_models"),
        ({"max_request_usd": "-1"}, "max_request_usd"),
        ({"max_request_usd": "lots"}, "max_request_usd"),
        ({"slug": "other"}, "slug"),
        ({"name": "ok", "allowed_models": ["gpt 4o"]}, "allowed_models"),
        ({}, None),
    ],
)
def test_bad_changes_are_422_and_write_nothing(api, org, team, key, admin_key, body, field):
    for path in ("/v1/teams/search", f"/v1/keys/{lookup(key)}"):
        response = api.patch(path, json=body, headers=auth(admin_key))
        assert_error(response, 422, "invalid_field", field)
    team.refresh_from_db()
    assert (team.name, team.allowed_models, team.max_request_usd) == ("", [], None)
    stored = ApiKey.objects.get(lookup_id=lookup(key))
    assert (stored.name, stored.allowed_models) == ("", [])
    assert not AuditEntry.objects.filter(action="update").exists()


def test_who_may_read_and_change(api, org, make_org, make_key, team, key, admin_key):
    team_admin = make_key(org, team="search", admin=True)
    other_team_key = make_key(org, team="ads")
    other_org_admin = make_key(make_org("globex"), admin=True)

    assert_error(
        api.patch("/v1/teams/search", json={"name": "x"}, headers=auth(key)), 403, "forbidden"
    )
    assert_error(
        api.patch("/v1/teams/search", json={"name": "x"}, headers=auth(team_admin)),
        403,
        "forbidden",
    )
    assert api.get("/v1/teams/search", headers=auth(team_admin)).status_code == 200
    assert_error(api.get("/v1/teams/search", headers=auth(other_team_key)), 403, "forbidden")
    assert_error(api.get(f"/v1/keys/{lookup(admin_key)}", headers=auth(key)), 403, "forbidden")
    # Another org's team and key do not exist for this caller.
    assert_error(
        api.get("/v1/teams/search", headers=auth(other_org_admin)), 404, "not_found", "team"
    )
    assert_error(
        api.get(f"/v1/keys/{lookup(key)}", headers=auth(other_org_admin)), 404, "not_found", "key"
    )
    assert_error(
        api.get("/v1/keys/not-a-key", headers=auth(admin_key)), 422, "invalid_field", "key"
    )
    assert_error(api.delete("/v1/teams/search", headers=auth(admin_key)), 405, "method_not_allowed")


def test_a_change_that_changes_nothing_records_nothing(api, org, team, admin_key):
    first = api.patch("/v1/teams/search", json={"name": "Search"}, headers=auth(admin_key))
    again = api.patch("/v1/teams/search", json={"name": "Search"}, headers=auth(admin_key))

    assert first.status_code == again.status_code == 200
    assert AuditEntry.objects.filter(object_type="team").count() == 1
