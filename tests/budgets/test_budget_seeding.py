"""A budget created mid-period starts with the spend and the open holds its
scope already has in the current window (tollgate_seed_window), through the
API and through Django admin; a changed limit keeps the window."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from budgets.models import Budget, BudgetWindow, Reservation, Team
from tests.conftest import auth
from tracking.models import AggregationState, HourlyRollup, RequestEvent


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


# --- Zones whose clocks change at midnight -----------------------------------------


def put_at(org, period: str, at: str) -> Decimal:
    """A team budget for `research` created at the moment `at`: the spent
    its window is seeded with (tollgate_seed_window, as admin and the API
    seed it at now())."""
    team = Team.objects.get_or_create(org=org, slug="research")[0]
    budget = Budget.objects.create(
        org=org, scope="team", team=team, period=period, limit_usd=Decimal(1000)
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT tollgate_seed_window(%s, %s::timestamptz)", [budget.pk, at])
    return BudgetWindow.objects.get(budget=budget).spent


def events_at(org, *spend: tuple[str, str], team: str = "research") -> None:
    research = Team.objects.get_or_create(org=org, slug=team)[0]
    for n, (started_at, cost) in enumerate(spend):
        RequestEvent.objects.create(
            org=org,
            event_id=f"{team}-{n}",
            team=research,
            model="m",
            started_at=datetime.fromisoformat(started_at),
            cost_usd=Decimal(cost),
            priced=True,
            payload_hash="0" * 64,
        )


@pytest.mark.parametrize(
    ("time_zone", "at", "period", "want"),
    [
        # Havana's 1 Nov 2026 (and November) starts at the first of two
        # midnights, 04:00Z: the hour before the second (05:00Z) counts.
        ("America/Havana", "2026-11-01T06:00Z", "day", "0.111"),
        ("America/Havana", "2026-11-01T06:00Z", "month", "0.111"),
        # 04:30Z, in the first midnight's hour, lies in the window of 1 Nov.
        ("America/Havana", "2026-11-01T04:30Z", "day", "0.111"),
        # Santiago's 6 Sep 2026 starts at 01:00 (04:00Z): midnight is skipped.
        ("America/Santiago", "2026-09-06T06:00Z", "day", "0.03"),
    ],
)
def test_seeding_counts_the_spend_since_the_first_instant_of_the_local_day(
    make_org, time_zone, at, period, want
):
    org = make_org("acme", time_zone=time_zone)
    events_at(
        org,
        # Havana: 31 Oct 23:59 and 23:59 -04 (the day before), then 1 Nov
        # 00:00 and 00:30 -04, then 00:30 -05 (the second midnight's hour).
        ("2026-11-01T03:59:59+00:00", "5"),
        ("2026-10-31T12:00:00+00:00", "5"),
        ("2026-11-01T04:00:00+00:00", "0.001"),
        ("2026-11-01T04:29:00+00:00", "0.01"),
        ("2026-11-01T05:30:00+00:00", "0.1"),
        # Santiago: 5 Sep 23:59 -04, then 6 Sep 01:00 and 02:00 -03.
        ("2026-09-06T03:59:59+00:00", "7"),
        ("2026-09-06T04:00:00+00:00", "0.01"),
        ("2026-09-06T05:00:00+00:00", "0.02"),
    )
    assert put_at(org, period, at) == Decimal(want)


def test_seeding_counts_pruned_hours_from_the_first_instant_of_the_local_day(make_org):
    """Hours before the prune horizon count from their rollups: in Havana on
    1 Nov 2026 the hour that starts at the first midnight (04:00Z) does, the
    hour before it does not."""
    org = make_org("acme", time_zone="America/Havana")
    research = Team.objects.create(org=org, slug="research")
    for hour, cost in (("2026-11-01T03:00Z", "5"), ("2026-11-01T04:00Z", "2")):
        HourlyRollup.objects.create(
            org=org,
            team=research,
            hour=datetime.fromisoformat(hour),
            model="m",
            requests=1,
            cost_usd=Decimal(cost),
        )
    AggregationState.objects.create(
        name="prune_events", watermark=datetime.fromisoformat("2026-11-01T05:00Z")
    )
    # Raw events before the horizon are in the rollups already (or gone).
    events_at(org, ("2026-11-01T04:30:00+00:00", "2"), ("2026-11-01T05:30:00+00:00", "0.5"))

    assert put_at(org, "day", "2026-11-01T06:00Z") == Decimal("2.5")
