"""Model allow-lists of the org, a team and a key: a check or hold of a model
none allows gets 403 model_not_allowed before anything is held, singly and
in a batch alike; the org's list is set with PATCH /v1/org (validated,
audited) and the key's and team's in admin or the models."""

from __future__ import annotations

import pytest
from django.db import transaction

from budgets.models import ApiKey, AuditEntry, BudgetWindow, Organization, Reservation, Team
from tests.budgets.test_batch_holds import _item, decide_many, decide_one
from tests.conftest import assert_error, auth


def check(api, key: str, model: str | None, **extra):
    body = {"team": "search", "estimated_cost_usd": "0.01", **extra}
    if model is not None:
        body["model"] = model
    return api.post("/v1/budget/check", json=body, headers=auth(key))


def reserve(api, key: str, model: str | None, **extra):
    body = {"team": "search", "estimated_cost_usd": "0.01", **extra}
    if model is not None:
        body["model"] = model
    return api.post("/v1/budget/reservations", json=body, headers=auth(key))


def patch_org(api, admin_key: str, **settings):
    return api.patch("/v1/org", json=settings, headers=auth(admin_key))


def test_patch_org_sets_a_normalized_allow_list_audited(api, org, admin_key):
    response = patch_org(api, admin_key, allowed_models=["GPT-4o ", "claude-opus-*", "gpt-4o"])

    assert response.status_code == 200, response.text
    assert response.json()["organization"]["allowed_models"] == ["claude-opus-*", "gpt-4o"]
    org.refresh_from_db()
    assert org.allowed_models == ["claude-opus-*", "gpt-4o"]
    entry = AuditEntry.objects.get(object_type="organization", action="update")
    assert (entry.old["allowed_models"], entry.new["allowed_models"]) == (
        [],
        ["claude-opus-*", "gpt-4o"],
    )
    assert api.get("/v1/org", headers=auth(admin_key)).json()["organization"]["allowed_models"] == [
        "claude-opus-*",
        "gpt-4o",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "gpt-4o",
        ["gpt 4o"],
        ["*"],
        ["gpt-*-mini"],
        [""],
        [42],
        ["x" * 200],
        [f"m-{i}" for i in range(101)],
    ],
)
def test_patch_org_refuses_a_bad_allow_list_and_writes_nothing(api, org, admin_key, value):
    response = patch_org(api, admin_key, allowed_models=value)

    assert_error(response, 422, "invalid_field", "allowed_models")
    org.refresh_from_db()
    assert org.allowed_models == []
    assert not AuditEntry.objects.filter(object_type="organization", action="update").exists()


def test_the_orgs_list_refuses_other_models_before_anything_is_held(
    api, org, key, admin_key, make_budget
):
    budget = make_budget(org, "10")
    assert patch_org(api, admin_key, allowed_models=["gpt-4o", "claude-opus-*"]).status_code == 200

    refused = reserve(api, key, "claude-3-haiku")

    error = assert_error(refused, 403, "model_not_allowed", "model")
    assert (error["scope"], error["id"]) == ("org", org.slug)
    assert not Reservation.objects.exists()
    assert not BudgetWindow.objects.filter(budget=budget, reserved__gt=0).exists()
    assert_error(check(api, key, "gpt-4o-mini"), 403, "model_not_allowed", "model")
    # Exact names and family patterns, compared without case.
    assert check(api, key, "GPT-4o").status_code == 200
    assert reserve(api, key, "Claude-Opus-4-1").status_code == 201
    # A request that names no model, and the status read, are judged by no list.
    assert reserve(api, key, None).status_code == 201
    assert api.get("/v1/budget/status", headers=auth(key)).status_code == 200


def test_team_and_key_lists_refuse_too_the_first_refusing_one_named(
    api, org, make_key, make_budget
):
    make_budget(org, "10")
    key = make_key(org)
    Team.objects.create(org=org, slug="search", allowed_models=["gpt-*"])
    ApiKey.objects.filter(lookup_id=key.split("_")[1]).update(allowed_models=["gpt-4o"])

    by_team = assert_error(reserve(api, key, "claude-opus-4"), 403, "model_not_allowed", "model")
    by_key = assert_error(reserve(api, key, "gpt-4o-mini"), 403, "model_not_allowed", "model")
    other_team = reserve(api, key, "gpt-4o-mini", team="ads")

    assert (by_team["scope"], by_team["id"]) == ("team", "search")
    assert (by_key["scope"], by_key["id"]) == ("key", key.split("_")[1])
    assert_error(other_team, 403, "model_not_allowed", "model")  # still the key's list
    assert reserve(api, key, "gpt-4o").status_code == 201
    assert Reservation.objects.count() == 1


def test_a_refused_model_is_refused_before_its_price_is_asked(api, org, key, admin_key):
    """An org that denies unpriced models refuses a model off its list as not
    allowed, not as unpriced: the allow-list is judged first."""
    Organization.objects.filter(pk=org.pk).update(unpriced_policy="deny", allowed_models=["gpt-4o"])

    assert_error(reserve(api, key, "no-such-model"), 403, "model_not_allowed", "model")


def test_single_and_batched_holds_refuse_alike(make_org, make_budget):
    org = make_org()
    Organization.objects.filter(pk=org.pk).update(allowed_models=["gpt-*"])
    make_budget(org, "1")
    Team.objects.create(org=org, slug="search", allowed_models=["gpt-4o"])
    items = [
        _item(org, "0.1", model="gpt-4o"),
        _item(org, "0.1", model="claude-opus-4"),
        _item(org, "0.1", team="search", model="gpt-4o-mini"),
        _item(org, "0.1", team="search", model="GPT-4o"),
        _item(org, "0.1", team="search"),
    ]
    with transaction.atomic():
        savepoint = transaction.savepoint()
        single = [decide_one(item) for item in items]
        transaction.savepoint_rollback(savepoint)
        batched = decide_many(items)
        transaction.set_rollback(True)

    assert [r["status"] for r in single] == [r["status"] for r in batched]
    assert [r["status"] for r in batched] == [
        "held",
        "model_not_allowed",
        "model_not_allowed",
        "held",
        "held",
    ]
    assert [r.get("refused_by") for r in single] == [r.get("refused_by") for r in batched]
    assert batched[1]["refused_by"] == {"scope": "org", "id": org.slug}
    assert batched[2]["refused_by"] == {"scope": "team", "id": "search"}
