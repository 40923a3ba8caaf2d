"""Django admin: staff only, every page renders, keys are shown once."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from budgets.models import ApiKey, Budget, BudgetWindow, EndUser, Organization, Reservation, Team
from tracking.models import Price

MODELS = [Organization, Team, EndUser, Budget, BudgetWindow, Reservation, ApiKey, Price]


@pytest.fixture
def staff_client(client, db):
    user = get_user_model().objects.create_superuser("boss", "", "pw-for-tests-only")
    client.force_login(user)
    return client


def _admin_url(model, page: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{page}", args=args)


def test_admin_needs_staff(client, db):
    user = get_user_model().objects.create_user("plain", "", "pw-for-tests-only")
    client.force_login(user)
    response = client.get(_admin_url(Budget, "changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "model", [m for m in MODELS if m is not BudgetWindow], ids=lambda m: m.__name__
)
def test_every_admin_list_renders(staff_client, make_org, make_budget, model):
    org = make_org("acme")
    make_budget(org, "5", scope="team", team="search")
    response = staff_client.get(_admin_url(model, "changelist"))
    assert response.status_code == 200


def test_budget_list_shows_current_window(staff_client, make_org, make_budget):
    org = make_org("acme")
    budget = make_budget(org, "5")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_decide(%s, false, NULL, NULL, 1.25, NULL, NULL, "
            "NULL, true, 300, NULL)",
            [org.id],
        )
    response = staff_client.get(_admin_url(Budget, "changelist"))
    page = response.content.decode()
    assert '<td class="field-reserved">$1.25</td>' in page
    assert '<td class="field-used_pct">25.0%</td>' in page
    assert staff_client.get(_admin_url(Budget, "change", budget.pk)).status_code == 200


def test_creating_a_key_in_admin_shows_the_secret_once(staff_client, make_org):
    org = make_org("acme")
    response = staff_client.post(
        _admin_url(ApiKey, "add"),
        {"org": org.pk, "name": "gateway", "is_admin": "on"},
        follow=True,
    )
    assert response.status_code == 200
    secret = re.search(r"<code>(tg_[A-Za-z0-9_-]+)</code>", response.content.decode()).group(1)
    key = ApiKey.objects.get()
    assert key.matches(secret)
    assert secret not in key.key_hash
    later = staff_client.get(_admin_url(ApiKey, "change", key.pk)).content.decode()
    assert secret not in later


def test_revoke_action(staff_client, make_org, make_key):
    org = make_org("acme")
    make_key(org)
    key = ApiKey.objects.get()
    staff_client.post(
        _admin_url(ApiKey, "changelist"), {"action": "revoke", "_selected_action": [key.pk]}
    )
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_reset_window_is_audited(staff_client, make_org, make_budget):
    from django.contrib.admin.models import LogEntry
    from django.db import connection

    org = make_org("acme")
    budget = make_budget(org, "5")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_decide(%s, false, NULL, NULL, 1, NULL, NULL, NULL, true, 300, NULL)",
            [org.id],
        )
    BudgetWindow.objects.update(spent=2)

    staff_client.post(
        _admin_url(Budget, "changelist"),
        {"action": "reset_current_window", "_selected_action": [budget.pk]},
    )

    window = BudgetWindow.objects.get(budget=budget)
    assert window.spent == 0 and window.reserved == 1  # holds stay
    entry = LogEntry.objects.get(object_id=str(budget.pk))
    assert entry.user.username == "boss" and "was $2" in entry.change_message


def test_release_and_expire_actions(staff_client, make_org, make_budget):
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    org = make_org("acme")
    budget = make_budget(org, "5")
    with connection.cursor() as cursor:
        for _ in range(2):
            cursor.execute(
                "SELECT tollgate_decide(%s, false, NULL, NULL, 1, NULL, NULL, "
                "NULL, true, 300, NULL)",
                [org.id],
            )
    first, second = Reservation.objects.order_by("created_at", "id")
    Reservation.objects.filter(pk=second.pk).update(expires_at=timezone.now() - timedelta(1))

    staff_client.post(
        _admin_url(Reservation, "changelist"),
        {"action": "release_selected", "_selected_action": [first.pk]},
    )
    staff_client.post(
        _admin_url(Reservation, "changelist"),
        {"action": "expire_overdue", "_selected_action": [first.pk]},
    )

    assert Reservation.objects.get(pk=first.pk).status == "released"
    assert Reservation.objects.get(pk=second.pk).status == "expired"
    assert BudgetWindow.objects.get(budget=budget).reserved == 0


def test_a_keys_allow_list_is_set_in_admin_normalized_and_validated(staff_client, make_org):
    org = make_org("acme")
    add = _admin_url(ApiKey, "add")

    refused = staff_client.post(add, {"org": org.pk, "allowed_models": "gpt 4o"})
    assert refused.status_code == 200  # the form again, with the error
    assert "not a model name or a family pattern" in refused.content.decode()
    assert not ApiKey.objects.exists()

    staff_client.post(add, {"org": org.pk, "allowed_models": "GPT-4o,claude-opus-*"})
    assert ApiKey.objects.get().allowed_models == ["claude-opus-*", "gpt-4o"]


def test_a_key_budget_is_created_in_admin_with_the_keys_spend_so_far(
    staff_client, make_org, make_key
):
    org = make_org("acme")
    key = ApiKey.objects.get(lookup_id=make_key(org).split("_")[1])
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_decide(%s, false, NULL, NULL, 0.3, NULL, NULL, NULL, true, 300, "
            "NULL, %s)",
            [org.id, key.id],
        )

    response = staff_client.post(
        _admin_url(Budget, "add"),
        {
            "org": org.pk,
            "scope": "key",
            "key": key.pk,
            "period": "day",
            "limit_usd": "1",
            "soft_limit_pct": "80",
            "enforce": "on",
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
            # The windows inline's management form (it shows windows, adds none).
            "windows-TOTAL_FORMS": "0",
            "windows-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302
    budget = Budget.objects.get(scope="key")
    assert budget.key == key
    assert BudgetWindow.objects.get(budget=budget).reserved == Decimal("0.3")
    assert budget.subject_id == key.lookup_id
    bad = staff_client.post(
        _admin_url(Budget, "add"),
        {"org": org.pk, "scope": "key", "period": "week", "limit_usd": "1", "soft_limit_pct": "80"},
    )
    assert "A key budget needs a key" in bad.content.decode()
    assert Budget.objects.count() == 1


def _budget_form(org, **fields) -> dict:
    return {
        "org": org.pk,
        "period": "day",
        "limit_usd": "1",
        "soft_limit_pct": "80",
        "enforce": "on",
        "created_at_0": "2026-01-01",
        "created_at_1": "00:00:00",
        "windows-TOTAL_FORMS": "0",
        "windows-INITIAL_FORMS": "0",
        **fields,
    }


def test_tag_and_model_filtered_budgets_are_made_and_listed_in_admin(
    staff_client, make_org, make_budget
):
    org = make_org("acme")
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_decide(%s, false, NULL, NULL, 0.3, 'claude-opus-4', NULL, NULL, true,"
            " 300, NULL, NULL, '', '{\"customer\": \"acme\"}'::jsonb)",
            [org.id],
        )

    tagged = staff_client.post(
        _admin_url(Budget, "add"), _budget_form(org, scope="tag", tag="customer=acme")
    )
    filtered = staff_client.post(
        _admin_url(Budget, "add"), _budget_form(org, scope="org", model_filter=" Claude-Opus-* ")
    )

    assert (tagged.status_code, filtered.status_code) == (302, 302)
    tag_budget = Budget.objects.get(scope="tag")
    model_budget = Budget.objects.get(scope="org")
    assert model_budget.model_filter == "claude-opus-*"
    # Seeded with the open hold of its tag, and of its model.
    assert BudgetWindow.objects.get(budget=tag_budget).reserved == Decimal("0.3")
    assert BudgetWindow.objects.get(budget=model_budget).reserved == Decimal("0.3")
    page = staff_client.get(_admin_url(Budget, "changelist")).content.decode()
    assert "tag:customer=acme" in page
    assert "claude-opus-*" in page


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"scope": "tag", "tag": "customer"}, "name=value"),
        ({"scope": "tag", "tag": ""}, "name=value"),
        ({"scope": "org", "tag": "customer=acme"}, "Only a tag budget has a tag"),
        ({"scope": "org", "model_filter": "*opus"}, "family pattern"),
    ],
)
def test_bad_tag_and_model_filter_in_admin_save_nothing(staff_client, make_org, fields, words):
    org = make_org("acme")

    response = staff_client.post(_admin_url(Budget, "add"), _budget_form(org, **fields))

    assert response.status_code == 200
    assert words in response.content.decode()
    assert not Budget.objects.exists()
