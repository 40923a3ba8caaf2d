"""manage.py run_worker: the periodic jobs in one process."""

from __future__ import annotations

import signal
import time
from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone

from budgets.models import BudgetWindow, Reservation
from tests.conftest import auth, start_manage
from tracking.models import HourlyRollup


def test_one_round_expires_holds_aggregates_usage_and_delivers(api, org, key, make_budget, caplog):
    budget = make_budget(org, "5")
    held = api.post("/v1/budget/reservations", headers=auth(key), json={"estimated_cost_usd": "2"})
    Reservation.objects.filter(pk=held.json()["reservation_id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    api.post("/v1/events", headers=auth(key), json={"id": "w1", "model": "m", "cost_usd": "0.5"})
    from tracking.models import RequestEvent

    # Old enough for the aggregation lag.
    RequestEvent.objects.update(received_at=timezone.now() - timedelta(minutes=10))
    caplog.set_level("INFO", logger="tollgate.worker")

    call_command("run_worker", once=True)

    assert Reservation.objects.get().status == "expired"
    assert BudgetWindow.objects.get(budget=budget).reserved == 0
    assert HourlyRollup.objects.get().requests == 1
    # (The test server's own sweeper may have expired the hold first.)
    assert any(
        m.startswith("[aggregate usage] 1 events into 1 hour buckets in ") for m in caplog.messages
    )


def test_run_worker_stops_cleanly_on_sigterm(test_database_url, transactional_db):
    process = start_manage(test_database_url, "run_worker", "--interval", "0.5")
    # Signal it once it runs its loop (startup takes seconds on a loaded box).
    started = process.stdout.readline()
    assert "Worker started" in started, started
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, started + output
    assert "Worker stopped on SIGTERM" in output
