"""Closed holds are deleted by run_worker once RESERVATION_RETENTION_DAYS old;
active holds stay, however old. Without this the table grows by every hold
ever taken (~240 bytes each: ~2 GB a day at 100 holds/s)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from budgets.models import Reservation
from budgets.services import reservations_closed_before, reservations_prune
from tests.conftest import auth

DAY = timedelta(days=1)


def hold(org, *, status: str, closed_days_ago: float | None) -> Reservation:
    now = timezone.now()
    closed_at = None if closed_days_ago is None else now - closed_days_ago * DAY
    return Reservation.objects.create(
        org=org,
        amount=Decimal("0.01"),
        status=status,
        created_at=(closed_at or now) - timedelta(minutes=1),
        expires_at=(closed_at or now) + timedelta(minutes=4),
        closed_at=closed_at,
    )


def test_the_worker_deletes_holds_closed_longer_ago_than_the_retention(org, settings, caplog):
    settings.RESERVATION_RETENTION_DAYS = 7
    old = [
        hold(org, status="settled", closed_days_ago=8),
        hold(org, status="released", closed_days_ago=30),
        hold(org, status="expired", closed_days_ago=7.01),
    ]
    kept = [
        hold(org, status="settled", closed_days_ago=6.9),
        hold(org, status="released", closed_days_ago=0),
        hold(org, status="active", closed_days_ago=None),
    ]
    # An active hold taken long ago and still unexpired is never deleted.
    ancient_active = hold(org, status="active", closed_days_ago=None)
    Reservation.objects.filter(pk=ancient_active.pk).update(
        created_at=timezone.now() - 40 * DAY, expires_at=timezone.now() + DAY
    )
    caplog.set_level("INFO", logger="tollgate.worker")

    call_command("run_worker", once=True)

    assert set(Reservation.objects.values_list("pk", flat=True)) == {
        h.pk for h in [*kept, ancient_active]
    }
    assert not Reservation.objects.filter(pk__in=[h.pk for h in old]).exists()
    assert "[prune reservations] 3 holds closed more than 7 days ago deleted" in caplog.messages


def test_a_batch_at_a_time_oldest_first(org):
    holds = [hold(org, status="settled", closed_days_ago=10 + i) for i in range(5)]
    assert reservations_prune(older_than=7 * DAY, limit=2) == 2
    remaining = set(Reservation.objects.values_list("pk", flat=True))
    assert remaining == {h.pk for h in holds[:3]}  # the two oldest went first
    assert reservations_prune(older_than=7 * DAY, limit=10) == 3
    assert reservations_prune(older_than=7 * DAY, limit=10) == 0


def test_retention_zero_keeps_every_hold(org, settings, caplog):
    settings.RESERVATION_RETENTION_DAYS = 0
    hold(org, status="settled", closed_days_ago=400)
    caplog.set_level("INFO", logger="tollgate.worker")
    call_command("run_worker", once=True)
    assert Reservation.objects.count() == 1
    assert not [m for m in caplog.messages if "prune reservations" in m]


def test_the_pruning_query_can_use_the_closed_index(org):
    hold(org, status="settled", closed_days_ago=8)
    oldest = reservations_closed_before(timezone.now())
    with transaction.atomic(), connection.cursor() as cursor:
        # On a small table a sequential scan is cheaper; the question is
        # whether the partial index's condition matches the query's.
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = oldest.explain()
    assert "reservation_closed" in plan, plan


def test_a_pruned_hold_answers_404_to_a_release_and_settles_nothing(
    api, org, key, make_budget, settings
):
    make_budget(org, "5")
    reservation_id = api.post(
        "/v1/budget/reservations", headers=auth(key), json={"estimated_cost_usd": "1"}
    ).json()["reservation_id"]
    release = f"/v1/budget/reservations/{reservation_id}/release"
    assert api.post(release, headers=auth(key)).status_code == 200
    assert api.post(release, headers=auth(key)).status_code == 200  # idempotent while kept
    Reservation.objects.filter(pk=reservation_id).update(closed_at=timezone.now() - 8 * DAY)

    assert reservations_prune(older_than=7 * DAY) == 1

    response = api.post(release, headers=auth(key))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    # A late event that names it is still recorded; it has no hold to settle.
    event = api.post(
        "/v1/events",
        headers=auth(key),
        json={"id": "late", "model": "m", "cost_usd": "0.5", "reservation_id": reservation_id},
    )
    assert event.status_code in (200, 201), event.text
    result = event.json()["results"][0]
    assert result["reservation"]["settled"] is False, result
    assert result["reservation"]["status"] is None, result
