"""PATCH /v1/teams/{slug} and PATCH /v1/keys/{lookup_id}: a team's and a key's
per-request cap and model allow-list, set by admin keys of the whole org,
audited, judged whole, and met by the next request."""

from __future__ import annotations

from decimal import Decimal

import pytest

from budgets.models import ApiKey, AuditEntry, Team
from tests.conftest import assert_error, auth


def lookup(secret: str) -> str:
    return secret.split("_")[1]


def reserve(api, key: str, **extra):
    body = {"team": "search", "estimated_cost_usd": "0.5", **extra}
    return api.post("/v1/budget/reservations", json=body, headers=auth(key))


def test_a_teams_cap_and_allow_list_apply_to_its_next_request_audited(api, org, key, admin_key):
    Team.objects.create(org=org, slug="search")

    response = api.patch(
        "/v1/teams/search",
        json={"max_request_usd": "0.4", "allowed_models": ["Claude-Opus-*", "gpt-4o"]},
        headers=auth(admin_key),
    )

    assert response.status_code == 200, response.text
    assert response.json()["team"] == {
        "slug": "search",
        "name": "",
        "max_request_usd": "0.4",
        "allowed_models": ["claude-opus-*", "gpt-4o"],
    }
    assert_error(reserve(api, key, model="gpt-4o"), 402, "request_too_expensive")
    assert_error(
        reserve(api, key, model="o3", estimated_cost_usd="0.1"), 403, "model_not_allowed", "model"
    )
    entry = AuditEntry.objects.get(object_type="team")
    assert (entry.object_id, entry.action) == ("search", "update")
    assert (entry.old["max_request_usd"], entry.new["max_request_usd"]) == (None, "0.4")
    listed = api.get("/v1/audit?object=team:search", headers=auth(admin_key)).json()
    assert [e["action"] for e in listed["entries"]] == ["update"]

    cleared = api.patch(
        "/v1/teams/search",
        json={"max_request_usd": None, "allowed_models": []},
        headers=auth(admin_key),
    )
    assert cleared.status_code == 200, cleared.text
    assert reserve(api, key, model="o3").status_code == 201
    # The same values again change nothing and record nothing.
    api.patch("/v1/teams/search", json={"allowed_models": []}, headers=auth(admin_key))
    assert AuditEntry.objects.filter(object_type="team").count() == 2


def test_a_keys_cap_and_allow_list_apply_to_its_next_request_audited(api, org, make_key, admin_key):
    app = make_key(org)

    response = api.patch(
        f"/v1/keys/{lookup(app)}",
        json={"max_request_usd": 0.25, "allowed_models": ["gpt-*"]},
        headers=auth(admin_key),
    )

    assert response.status_code == 200, response.text
    body = response.json()["key"]
    assert (body["lookup_id"], body["max_request_usd"], body["allowed_models"]) == (
        lookup(app),
        "0.25",
        ["gpt-*"],
    )
    stored = ApiKey.objects.get(lookup_id=lookup(app))
    assert stored.max_request_usd == Decimal("0.25")
    error = assert_error(reserve(api, app, model="gpt-4o"), 402, "request_too_expensive")
    assert (error["scope"], error["id"]) == ("key", lookup(app))
    assert_error(
        reserve(api, app, model="claude-opus-4", estimated_cost_usd="0.1"),
        403,
        "model_not_allowed",
        "model",
    )
    entry = AuditEntry.objects.get(object_type="api_key", action="update")
    assert entry.object_id == str(stored.pk)
    assert (entry.old["allowed_models"], entry.new["allowed_models"]) == ([], ["gpt-*"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"allowed_models": ["gpt 4o"]}, "allowed_models"),
        ({"allowed_models": "gpt-4o"}, "allowed_models"),
        ({"max_request_usd": "-1"}, "max_request_usd"),
        ({"max_request_usd": "lots"}, "max_request_usd"),
        ({"name": "x"}, "name"),
        # Judged whole: a good value beside a bad one is not written either.
        ({"max_request_usd": "1", "allowed_models": ["*"]}, "allowed_models"),
    ],
)
def test_bad_limits_write_nothing(api, org, make_key, admin_key, body, field):
    Team.objects.create(org=org, slug="search")
    app = make_key(org)

    for path in ("/v1/teams/search", f"/v1/keys/{lookup(app)}"):
        assert_error(
            api.patch(path, json=body, headers=auth(admin_key)), 422, "invalid_field", field
        )

    assert Team.objects.get().max_request_usd is None
    assert ApiKey.objects.get(lookup_id=lookup(app)).max_request_usd is None
    assert not AuditEntry.objects.filter(action="update").exists()


def test_who_may_change_limits(api, org, key, make_key, make_org):
    Team.objects.create(org=org, slug="search")
    team_admin = make_key(org, team="search", admin=True)
    foreign = make_key(make_org())
    admin = make_key(org, admin=True)
    body = {"max_request_usd": "9"}

    assert_error(api.patch("/v1/teams/search", json=body, headers=auth(key)), 403, "forbidden")
    assert_error(
        api.patch("/v1/teams/search", json=body, headers=auth(team_admin)), 403, "forbidden"
    )
    assert_error(api.patch("/v1/teams/nope", json=body, headers=auth(admin)), 404, "not_found")
    # Another org's key is unknown here.
    assert_error(
        api.patch(f"/v1/keys/{lookup(foreign)}", json=body, headers=auth(admin)), 404, "not_found"
    )
    assert not Team.objects.filter(slug="nope").exists()
