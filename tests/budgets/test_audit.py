"""The audit log (issue 23 item 7): every change to budgets, API keys,
organization settings and prices writes one append-only entry in the
transaction of the change, through the API, admin and commands alike; read
through GET /v1/audit and admin."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.urls import reverse

from budgets.models import ApiKey, AuditEntry, Budget, BudgetWindow, Organization, Team
from tests.conftest import assert_error, auth


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


# --- Through Django admin ---------------------------------------------------------------


@pytest.fixture
def staff_client(client, db):
    user = get_user_model().objects.create_superuser("boss", "", "pw-for-tests-only")
    client.force_login(user)
    return client


def _admin_url(model, page: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{page}", args=args)


def test_admin_budget_change_records_old_and_new_values_and_the_login(
    staff_client, make_org, make_budget
):
    org = make_org("acme")
    budget = make_budget(org, "500", scope="team", team="research", period="month")
    response = staff_client.post(
        _admin_url(Budget, "change", budget.pk),
        {
            "org": org.pk,
            "scope": "team",
            "team": budget.team_id,
            "user": "",
            "period": "month",
            "limit_usd": "600",
            "soft_limit_pct": "80",
            "enforce": "on",
            "created_at_0": "2026-12-01",
            "created_at_1": "00:00:00",
            "windows-TOTAL_FORMS": "0",
            "windows-INITIAL_FORMS": "0",
        },
        REMOTE_ADDR="203.0.113.7",
        HTTP_X_REQUEST_ID="admin-req-1",
    )
    assert response.status_code == 302, response.content.decode()[:2000]

    (entry,) = budget_entries()
    assert (entry.action, entry.object_id) == ("update", "team/research/month")
    assert (entry.old["limit_usd"], entry.new["limit_usd"]) == ("500", "600")
    assert (entry.actor_kind, entry.actor_label) == ("user", "boss")
    assert entry.actor_user_id == get_user_model().objects.get(username="boss").pk
    assert (entry.request_id, entry.client_addr) == ("admin-req-1", "203.0.113.7")


def test_admin_org_setting_change_records_old_and_new_values(staff_client, make_org, fake_dns):
    fake_dns["hooks.example.com"] = ["93.184.215.14"]
    org = make_org("acme")
    response = staff_client.post(
        _admin_url(Organization, "change", org.pk),
        {
            "slug": "acme",
            "name": "acme",
            "time_zone": "Europe/Paris",
            "strict": "on",
            "fail_mode": "open",
            "webhook_url": "https://hooks.example.com/services/T0/B0/s3cr3t",
            "unpriced_policy": "fallback",
            "created_at_0": "2026-12-01",
            "created_at_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]

    entry = AuditEntry.objects.get(object_type="organization", action="update")
    changed = {k: (entry.old[k], entry.new[k]) for k in entry.new if entry.old[k] != entry.new[k]}
    webhook = changed.pop("webhook_url")
    assert changed == {
        "time_zone": ("UTC", "Europe/Paris"),
        "strict": (False, True),
        "fail_mode": ("", "open"),
    }
    # Recorded as changed, without the secret part of the URL.
    assert webhook[0] == "" and webhook[1].startswith("https://hooks.example.com/… (sha256 ")
    assert "s3cr3t" not in str(entry.new)
    assert entry.actor_label == "boss" and entry.object_id == "acme"


def test_admin_org_change_that_fails_validation_records_nothing(staff_client, make_org):
    org = make_org("acme")
    response = staff_client.post(
        _admin_url(Organization, "change", org.pk),
        {"slug": "acme", "time_zone": "Mars/Olympus", "created_at_0": "2026-12-01"},
    )
    assert response.status_code == 200  # the form again, with its error
    assert not AuditEntry.objects.filter(action="update").exists()


def test_admin_key_revoke_records_the_login(staff_client, make_org, make_key):
    org = make_org("acme")
    key = key_row(make_key(org))
    for _ in range(2):  # the second revocation changes nothing
        staff_client.post(
            _admin_url(ApiKey, "changelist"), {"action": "revoke", "_selected_action": [key.pk]}
        )

    (entry,) = AuditEntry.objects.filter(object_type="api_key", action="revoke")
    assert entry.object_id == str(key.pk)
    assert entry.old["revoked_at"] is None and entry.new["revoked_at"] is not None
    assert entry.old["lookup_id"] == key.lookup_id and "key_hash" not in entry.new
    assert (entry.actor_kind, entry.actor_label) == ("user", "boss")


def test_admin_window_reset_records_the_spend_it_cleared(staff_client, make_org, make_budget):
    org = make_org("acme")
    budget = make_budget(org, "5")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_decide(%s, false, NULL, NULL, 1, NULL, NULL, NULL, true, 300, NULL)",
            [org.id],
        )
    BudgetWindow.objects.update(spent="2.5")
    staff_client.post(
        _admin_url(Budget, "changelist"),
        {"action": "reset_current_window", "_selected_action": [budget.pk]},
    )

    entry = AuditEntry.objects.get(action="reset_window")
    assert entry.object_id == "org/acme/day"
    assert (entry.old["spent_usd"], entry.new["spent_usd"]) == ("2.5", "0")


def test_admin_shows_entries_read_only(staff_client, make_org):
    make_org("acme")
    entry = AuditEntry.objects.get(object_type="organization")
    assert staff_client.get(_admin_url(AuditEntry, "changelist")).status_code == 200
    page = staff_client.get(_admin_url(AuditEntry, "change", entry.pk))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert staff_client.get(_admin_url(AuditEntry, "add")).status_code == 403
    staff_client.post(_admin_url(AuditEntry, "delete", entry.pk), {"post": "yes"})
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


# --- Management commands ---------------------------------------------------------------


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_create_org_and_create_api_key_are_recorded_as_commands():
    run("create_org", "acme", "--tz", "Europe/Paris")
    run("create_api_key", "--org", "acme", "--team", "search", "--admin")

    org_entry = AuditEntry.objects.get(object_type="organization")
    assert (org_entry.action, org_entry.actor_kind, org_entry.old) == ("create", "command", None)
    assert org_entry.new["time_zone"] == "Europe/Paris"
    assert org_entry.actor_label.startswith("create_org (by ")
    key_entry = AuditEntry.objects.get(object_type="api_key")
    key = ApiKey.objects.get()
    assert (key_entry.action, key_entry.object_id) == ("create", str(key.pk))
    assert key_entry.new == {
        "lookup_id": key.lookup_id,
        "name": "",
        "team": "search",
        "is_admin": True,
        "max_request_usd": None,
        "allowed_models": [],
        "revoked_at": None,
    }
    assert key_entry.actor_label.startswith("create_api_key (by ")


@pytest.mark.django_db
def test_load_prices_records_the_load_and_each_changed_price(tmp_path):
    prices = {
        "gpt-x": {
            "litellm_provider": "openai",
            "mode": "chat",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
        },
        "gpt-y": {
            "litellm_provider": "openai",
            "mode": "chat",
            "input_cost_per_token": 3e-06,
            "output_cost_per_token": 4e-06,
        },
    }
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(prices))
    run("load_prices", str(path))
    prices["gpt-x"]["input_cost_per_token"] = 5e-06
    path.write_text(json.dumps(prices))
    run("load_prices", str(path))

    first, second = AuditEntry.objects.filter(object_type="prices").order_by("id")
    assert first.new["added_models"] == ["gpt-x", "gpt-y"]
    assert (second.new["added"], second.new["changed"], second.new["unchanged"]) == (0, 1, 1)
    assert second.actor_kind == "command" and second.org_id is None
    # One entry per price tier that changed: the standard prices, and the
    # batch ones derived from them (half, the map having no *_batches rates).
    changes = {e.object_id: e for e in AuditEntry.objects.filter(object_type="price")}
    assert set(changes) == {"openai/gpt-x", "openai/gpt-x (batch)"}
    standard, batch = changes["openai/gpt-x"], changes["openai/gpt-x (batch)"]
    assert (standard.old["input_per_token"], standard.new["input_per_token"]) == (
        "0.000001",
        "0.000005",
    )
    assert (batch.old["input_per_token"], batch.new["input_per_token"]) == (
        "0.0000005",
        "0.0000025",
    )


@pytest.mark.django_db
def test_a_command_that_fails_records_nothing():
    with pytest.raises(CommandError):
        run("create_org", "acme", "--tz", "Mars/Olympus")
    assert not AuditEntry.objects.exists()


# --- Append-only ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("statement", ["UPDATE", "DELETE"])
def test_the_database_refuses_to_change_or_delete_an_entry(make_org, statement):
    make_org("acme")
    entry = AuditEntry.objects.get()
    sql = {
        "UPDATE": "UPDATE budgets_auditentry SET action = 'nothing' WHERE id = %s",
        "DELETE": "DELETE FROM budgets_auditentry WHERE id = %s",
    }[statement]
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, [entry.pk])
    assert AuditEntry.objects.get().action == "create"


@pytest.mark.django_db(transaction=True)
def test_an_entry_outside_a_transaction_is_refused():
    from budgets.audit import SYSTEM, audit_record

    with pytest.raises(RuntimeError):
        audit_record(actor=SYSTEM, org=None, object_type="x", object_id="y", action="z")


# --- GET /v1/audit ----------------------------------------------------------------------


def get_audit(api, key: str, **params):
    return api.get("/v1/audit", params=params, headers=auth(key))


def test_audit_lists_the_orgs_entries_newest_first(api, org, admin_key):
    api.put("/v1/budgets/team/search/day", json={"limit_usd": "5"}, headers=auth(admin_key))
    api.put("/v1/budgets/team/search/day", json={"limit_usd": "6"}, headers=auth(admin_key))

    response = get_audit(api, admin_key)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["next_cursor"] is None
    actions = [(e["object"]["type"], e["action"]) for e in body["entries"]]
    # The fixtures created the org and the key (as "system") before.
    assert actions == [
        ("budget", "update"),
        ("budget", "create"),
        ("api_key", "create"),
        ("organization", "create"),
    ]
    update = body["entries"][0]
    assert update["object"] == {"type": "budget", "id": "team/search/day"}
    assert (update["old"]["limit_usd"], update["new"]["limit_usd"]) == ("5", "6")
    assert update["actor"]["kind"] == "key"
    assert update["actor"]["key_id"] == key_row(admin_key).pk
    assert update["at"].endswith("Z") and update["client_addr"] == "127.0.0.1"
    assert update["request_id"]


def test_a_budgets_history_is_the_log_filtered_to_it(api, org, admin_key):
    for limit in ("1", "2", "3"):
        api.put("/v1/budgets/team/search/day", json={"limit_usd": limit}, headers=auth(admin_key))
    api.put("/v1/budgets/team/other/day", json={"limit_usd": "9"}, headers=auth(admin_key))
    api.delete("/v1/budgets/team/search/day", headers=auth(admin_key))

    history = get_audit(api, admin_key, object="budget:team/search/day").json()["entries"]
    assert [(e["action"], (e["new"] or e["old"])["limit_usd"]) for e in history] == [
        ("delete", "3"),
        ("update", "3"),
        ("update", "2"),
        ("create", "1"),
    ]
    budgets = get_audit(api, admin_key, object="budget", action="create").json()["entries"]
    assert {e["object"]["id"] for e in budgets} == {"team/search/day", "team/other/day"}


def test_audit_pages_with_an_opaque_cursor(api, org, admin_key):
    for limit in range(1, 8):
        api.put("/v1/budgets/user/bob/day", json={"limit_usd": limit}, headers=auth(admin_key))

    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"object": "budget", "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = get_audit(api, admin_key, **params).json()
        seen += [e["id"] for e in body["entries"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 7 and seen == sorted(seen, reverse=True)


def test_audit_filters_by_time(api, org, admin_key):
    api.put("/v1/budgets/user/bob/day", json={"limit_usd": 1}, headers=auth(admin_key))
    everything = get_audit(api, admin_key).json()["entries"]
    newest = everything[0]["at"]
    after = get_audit(api, admin_key, **{"from": newest}).json()["entries"]
    assert [e["id"] for e in after] == [everything[0]["id"]]
    before = get_audit(api, admin_key, to=newest).json()["entries"]
    assert everything[0]["id"] not in [e["id"] for e in before]
    assert get_audit(api, admin_key, to="2000-01-01T00:00:00Z").json()["entries"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01T00:00:00Z"}, "to"),
        ({"from": "2026-03-10T12:00:00Z", "to": "2026-03-10T11:00:00Z"}, "to"),
        ({"object": "window"}, "object"),
        ({"object": "budget:"}, "object"),
        ({"action": "DROP TABLE"}, "action"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "YTE6LTE"}, "cursor"),  # "a1:-1"
    ],
)
def test_bad_filters_are_422_naming_the_field(api, org, admin_key, params, field):
    assert_error(get_audit(api, admin_key, **params), 422, "invalid_field", field)


def test_audit_needs_an_admin_key(api, org, key):
    assert_error(get_audit(api, key), 403, "forbidden")
    assert_error(api.get("/v1/audit"), 401, "unauthenticated")
    assert_error(api.post("/v1/audit", headers=auth(key)), 405, "method_not_allowed")


def test_another_orgs_entries_are_never_visible(api, org, admin_key, make_org, make_key):
    other = make_org("other")
    other_key = make_key(other, admin=True)
    api.put("/v1/budgets/team/secret/day", json={"limit_usd": 1}, headers=auth(other_key))

    entries = get_audit(api, admin_key).json()["entries"]
    assert entries and all(e["object"]["id"] != "team/secret/day" for e in entries)
    assert {e["object"]["id"] for e in entries if e["object"]["type"] == "organization"} == {"acme"}
    assert get_audit(api, admin_key, object="budget:team/secret/day").json()["entries"] == []


def test_a_team_limited_admin_key_reads_only_its_teams_budgets(api, org, admin_key, make_key):
    team_key = make_key(org, team="search", admin=True)
    api.put("/v1/budgets/team/search/day", json={"limit_usd": 1}, headers=auth(team_key))

    own = get_audit(api, team_key, object="budget:team/search/day")
    assert own.status_code == 200 and len(own.json()["entries"]) == 1
    for params in ({}, {"object": "budget"}, {"object": "budget:team/other/day"}):
        assert_error(get_audit(api, team_key, **params), 403, "forbidden", "object")


def test_deleting_a_team_in_admin_records_its_budgets_and_keys(
    staff_client, make_org, make_budget, make_key
):
    org = make_org("acme")
    make_budget(org, "5", scope="team", team="search", period="week")
    key = key_row(make_key(org, team="search"))
    team = key.team
    response = staff_client.post(_admin_url(Team, "delete", team.pk), {"post": "yes"})
    assert response.status_code == 302

    deleted = AuditEntry.objects.filter(action="delete").order_by("id")
    assert [(e.object_type, e.object_id) for e in deleted] == [
        ("budget", "team/search/week"),
        ("api_key", str(key.pk)),
    ]
    assert all(e.actor_label == "boss" for e in deleted)
