"""Closed holds are deleted by run_worker once RESERVATION_RETENTION_DAYS old;
active holds stay, however old. Without this the table grows by every hold
ever taken (~240 bytes each: ~2 GB a day at 100 holds/s)."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import httpx
import pytest
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


def test_a_pruned_hold_answers_closed_to_a_release_and_settles_nothing(api, org, key, make_budget):
    make_budget(org, "5")
    reservation_id = api.post(
        "/v1/budget/reservations", headers=auth(key), json={"estimated_cost_usd": "1"}
    ).json()["reservation_id"]
    release = f"/v1/budget/reservations/{reservation_id}/release"
    assert api.post(release, headers=auth(key)).json()["status"] == "released"
    assert api.post(release, headers=auth(key)).json()["status"] == "released"
    # As if it had been taken and released 8 days ago: the id says when it was made.
    taken_8_days_ago = id_made_at(timezone.now() - 8 * DAY)
    Reservation.objects.filter(pk=reservation_id).update(
        id=taken_8_days_ago, closed_at=timezone.now() - 8 * DAY
    )
    release = f"/v1/budget/reservations/{taken_8_days_ago}/release"
    assert api.post(release, headers=auth(key)).json()["status"] == "released"

    assert reservations_prune(older_than=7 * DAY) == 1

    # Still 200 every time (API.md); which way it closed is no longer known.
    response = api.post(release, headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "reservation_id": str(taken_8_days_ago),
        "status": "closed",
        "released": False,
    }
    # A late event that names it is still recorded; it has no hold to settle.
    event = api.post(
        "/v1/events",
        headers=auth(key),
        json={
            "id": "late",
            "model": "m",
            "cost_usd": "0.5",
            "reservation_id": str(taken_8_days_ago),
        },
    )
    assert event.status_code in (200, 201), event.text
    result = event.json()["results"][0]
    assert result["reservation"]["settled"] is False, result
    assert result["reservation"]["status"] is None, result


def id_made_at(at: datetime) -> uuid.UUID:
    """A UUID version 7 whose time is `at`, as tollgate_new_reservation_id makes them."""
    raw = bytearray(int(at.timestamp() * 1000).to_bytes(6, "big") + secrets.token_bytes(10))
    raw[6] = 0x70 | raw[6] & 0x0F
    raw[8] = 0x80 | raw[8] & 0x3F
    return uuid.UUID(bytes=bytes(raw))


def test_an_id_never_given_out_is_404_unless_retention_could_have_deleted_it(api, org, key):
    now = timezone.now()
    expected = {
        uuid.uuid4(): 404,  # ids made before migration 0022 carry no time
        id_made_at(now): 404,
        id_made_at(now - 6 * DAY): 404,  # a hold taken then would still be kept
        id_made_at(now - 8 * DAY): 200,  # run_worker may have deleted it
    }
    answers = {
        id_: api.post(f"/v1/budget/reservations/{id_}/release", headers=auth(key)).json()
        for id_ in expected
    }
    for id_, status in expected.items():
        if status == 404:
            assert answers[id_]["error"]["code"] == "not_found", answers[id_]
        else:
            assert answers[id_] == {
                "reservation_id": str(id_),
                "status": "closed",
                "released": False,
            }


@pytest.mark.parametrize("batched", [True, False])
def test_reservation_ids_are_version_7_from_the_time_of_the_hold(
    live_server_factory, org, key, make_budget, batched
):
    make_budget(org, "5")
    # Retention 0 keeps every hold: an old id not found is unknown, so 404.
    server = live_server_factory(
        RESERVATION_RETENTION_DAYS="0", HOTPATH_BATCH_INFLIGHT="8" if batched else "0"
    )
    with httpx.Client(base_url=server.url, timeout=10) as api:
        ids = [
            uuid.UUID(
                api.post(
                    "/v1/budget/reservations",
                    headers=auth(key),
                    json={"estimated_cost_usd": "0.01"},
                ).json()["reservation_id"]
            )
            for _ in range(3)
        ]
        old = id_made_at(timezone.now() - 400 * DAY)
        assert (
            api.post(f"/v1/budget/reservations/{old}/release", headers=auth(key)).status_code == 404
        )
    assert [i.version for i in ids] == [7, 7, 7]
    made_ms = [int.from_bytes(i.bytes[:6], "big") for i in ids]
    assert made_ms == sorted(made_ms)  # taken one after another: at the index's end
    created = Reservation.objects.in_bulk(ids)
    assert made_ms == [int(created[i].created_at.timestamp() * 1000) for i in ids]
