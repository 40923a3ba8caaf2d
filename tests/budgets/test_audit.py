"""The audit log (issue 23 item 7): every change to budgets, API keys,
organization settings and prices writes one append-only entry in the
transaction of the change, through the API, admin and commands alike; read
through GET /v1/audit and admin."""

from __future__ import annotations

from budgets.models import ApiKey, AuditEntry
from tests.conftest import auth


def key_row(secret: str) -> ApiKey:
    return ApiKey.objects.get(lookup_id=secret.split("_")[1])


def budget_entries() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(object_type="budget").order_by("id"))


# --- Through the API ------------------------------------------------------------------


def test_api_put_records_create_then_update_with_old_and_new_values(api, org, admin_key):
    headers = {**auth(admin_key), "X-Request-Id": "req-audit-1"}
    created = api.put("/v1/budgets/team/search/day", json={"limit_usd": "500"}, headers=headers)
    assert created.status_code == 200, created.text
    changed = api.put(
        "/v1/budgets/team/search/day",
        json={"limit_usd": "600", "soft_limit_pct": 90},
        headers={**auth(admin_key), "X-Request-Id": "req-audit-2"},
    )
    assert changed.status_code == 200, changed.text

    create, update = budget_entries()
    key = key_row(admin_key)
    assert (create.action, create.object_id, create.old) == ("create", "team/search/day", None)
    assert create.new == {
        "scope": "team",
        "subject": "search",
        "period": "day",
        "limit_usd": "500",
        "soft_limit_pct": 80,
        "enforce": True,
    }
    assert update.action == "update"
    assert update.old == create.new
    assert update.new == {**create.new, "limit_usd": "600", "soft_limit_pct": 90}
    assert (update.actor_kind, update.actor_key_id) == ("key", key.pk)
    assert update.actor_label == f"key {key.lookup_id}"
    assert (create.request_id, update.request_id) == ("req-audit-1", "req-audit-2")
    assert update.client_addr == "127.0.0.1"
    assert update.org_id == org.pk and update.at is not None


def test_api_put_that_changes_nothing_records_nothing(api, org, admin_key):
    for _ in range(2):
        response = api.put(
            "/v1/budgets/org/acme/month", json={"limit_usd": 5}, headers=auth(admin_key)
        )
        assert response.status_code == 200, response.text
    assert [e.action for e in budget_entries()] == ["create"]


def test_api_delete_records_the_old_values(api, org, admin_key, make_budget):
    make_budget(org, "7.5", scope="user", user="bob", period="week")
    response = api.delete("/v1/budgets/user/bob/week", headers=auth(admin_key))
    assert response.status_code == 204

    (entry,) = budget_entries()
    assert (entry.action, entry.object_id, entry.new) == ("delete", "user/bob/week", None)
    assert entry.old["limit_usd"] == "7.5" and entry.old["enforce"] is True
    assert entry.actor_key_id == key_row(admin_key).pk
    assert response.headers["x-request-id"] == entry.request_id


def test_api_changes_that_fail_record_nothing(api, org, admin_key, make_org):
    make_org("other", strict=True)
    failures = [
        api.put("/v1/budgets/org/other/day", json={"limit_usd": 1}, headers=auth(admin_key)),
        api.put("/v1/budgets/team/x/day", json={"limit_usd": -1}, headers=auth(admin_key)),
        api.delete("/v1/budgets/team/nobody/day", headers=auth(admin_key)),
    ]
    assert [r.status_code for r in failures] == [404, 422, 404]
    assert budget_entries() == []
