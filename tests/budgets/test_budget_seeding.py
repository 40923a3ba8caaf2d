"""A budget created mid-period starts with the spend and the open holds its
scope already has in the current window (tollgate_seed_window), through the
API and through Django admin; a changed limit keeps the window."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from budgets.models import Budget, BudgetWindow, Reservation
from tests.conftest import auth
from tracking.models import AggregationState, HourlyRollup


def put(api, admin_key, path: str, **body):
    return api.put(f"/v1/budgets/{path}", json=body, headers=auth(admin_key))


def spend(api, key, event_id: str, cost: str, team="research", user="bob", **extra):
    body = {"id": event_id, "team": team, "user": user, "model": "m", "cost_usd": cost, **extra}
    response = api.post("/v1/events", json=body, headers=auth(key))
    assert response.status_code == 201, response.text


def reserve(api, key, amount: str, team="research", user="bob"):
    body = {"team": team, "user": user, "estimated_cost_usd": amount}
    return api.post("/v1/budget/reservations", json=body, headers=auth(key))


def test_a_budget_created_mid_period_counts_the_periods_earlier_spend(api, org, key, admin_key):
    spend(api, key, "e1", "2.25")
    spend(api, key, "e2", "0.50", user="alice")
    spend(api, key, "e3", "4.00", team="other", user="carol")

    team = put(api, admin_key, "team/research/month", limit_usd="5").json()
    user = put(api, admin_key, "user/bob/day", limit_usd="3").json()
    whole = put(api, admin_key, "org/acme/total", limit_usd="100").json()

    assert (team["spent_usd"], team["remaining_usd"]) == ("2.75", "2.25")
    assert (user["spent_usd"], user["remaining_usd"]) == ("2.25", "0.75")
    assert whole["spent_usd"] == "6.75"
    # The earlier spend counts against the new cap at once.
    refused = reserve(api, key, "2.50")
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["id"] == "research"
    assert reserve(api, key, "0.70").status_code == 201


def test_earlier_periods_spend_does_not_count(api, org, key, admin_key):
    spend(api, key, "today", "1")
    yesterday = timezone.now() - timedelta(days=1, hours=1)
    spend(api, key, "yesterday", "9", started_at=yesterday.isoformat())
    assert put(api, admin_key, "org/acme/day", limit_usd="5").json()["spent_usd"] == "1"


def test_open_holds_count_and_settle_out_of_the_new_budget(api, org, key, admin_key):
    held = reserve(api, key, "3")
    assert held.status_code == 201, held.text

    body = put(api, admin_key, "team/research/day", limit_usd="4").json()
    assert (body["spent_usd"], body["reserved_usd"], body["remaining_usd"]) == ("0", "3", "1")
    assert reserve(api, key, "1.5").status_code == 402

    settle = {
        "id": "settles",
        "team": "research",
        "user": "bob",
        "model": "m",
        "cost_usd": "2",
        "reservation_id": held.json()["reservation_id"],
    }
    assert api.post("/v1/events", json=settle, headers=auth(key)).status_code == 201
    window = BudgetWindow.objects.get(budget__scope="team")
    assert (window.spent, window.reserved) == (Decimal(2), Decimal(0))


def test_changing_a_limit_keeps_the_window(api, org, key, admin_key):
    put(api, admin_key, "team/research/day", limit_usd="5")
    spend(api, key, "e1", "2")
    assert put(api, admin_key, "team/research/day", limit_usd="8").json()["spent_usd"] == "2"
    assert BudgetWindow.objects.count() == 1


def test_pruned_hours_count_from_the_rollups(api, org, key, admin_key):
    """Raw events of hours before the prune horizon are gone; their rollups
    are all that is left of them, and they count."""
    now = timezone.now()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if now - month_start < timedelta(hours=3):
        pytest.skip("needs two whole hours of this month before now")
    pruned_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    HourlyRollup.objects.create(
        org=org, hour=pruned_hour, model="m", requests=1, cost_usd=Decimal("1.5")
    )
    AggregationState.objects.create(name="prune_events", watermark=pruned_hour + timedelta(hours=1))
    spend(api, key, "after", "0.25")

    assert put(api, admin_key, "org/acme/month", limit_usd="10").json()["spent_usd"] == "1.75"


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("boss", "", "pw-for-tests-only")
    client.force_login(user)
    return client


def test_a_budget_added_in_admin_counts_the_periods_spend_and_holds(api, org, key, staff_client):
    spend(api, key, "e1", "1.25")
    assert reserve(api, key, "0.5").status_code == 201

    response = staff_client.post(
        reverse("admin:budgets_budget_add"),
        {
            "org": org.pk,
            "scope": "org",
            "period": "day",
            "limit_usd": "2",
            "soft_limit_pct": "80",
            "enforce": "on",
            "created_at_0": timezone.now().strftime("%Y-%m-%d"),
            "created_at_1": timezone.now().strftime("%H:%M:%S"),
            "windows-TOTAL_FORMS": "0",
            "windows-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors

    window = BudgetWindow.objects.get(budget=Budget.objects.get())
    assert (window.spent, window.reserved) == (Decimal("1.25"), Decimal("0.5"))
    assert window.id in Reservation.objects.get().window_ids
