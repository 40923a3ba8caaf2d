"""Budget alerts: recorded once per crossing by the hot path, delivered from
the outbox to a real local HTTP receiver with retries.

Most tests here raise alerts with holds, so their org counts holds
(`alerts_count_holds`); judging on settled spend, the default, and crossings
are tested in test_alert_crossings.py."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.utils import timezone

from budgets.models import Alert, AlertDeliveryAttempt
from tests.budgets.test_concurrency import _reserve_many
from tests.conftest import auth, start_manage


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it gets and answers
    with the status codes it is told to (then 200)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver(loopback_webhooks):
    r = Receiver()
    yield r
    r.server.shutdown()


def count_holds(org) -> None:
    org.alerts_count_holds = True
    org.save(update_fields=["alerts_count_holds"])


def reserve(api, key, amount, team="search"):
    return api.post(
        "/v1/budget/reservations",
        headers=auth(key),
        json={"team": team, "estimated_cost_usd": amount},
    )


def test_soft_and_hard_limits_are_recorded_once(api, org, key, make_budget):
    count_holds(org)
    budget = make_budget(org, "10", scope="team", team="search", soft_limit_pct=50)

    reserve(api, key, "4")  # 40%: nothing
    assert not Alert.objects.exists()
    reserve(api, key, "2")  # 60%: soft
    reserve(api, key, "1")  # 70%: still the one soft alert
    reserve(api, key, "3")  # 100%: hard

    alerts = {a.kind: a for a in Alert.objects.all()}
    assert set(alerts) == {"soft", "hard"}
    assert alerts["soft"].used_usd == 6 and alerts["hard"].used_usd == 10
    assert alerts["soft"].budget == budget
    assert alerts["soft"].delivery_status == "skipped"  # the org has no webhook


def test_spend_from_events_raises_alerts_too(api, org, key, make_budget):
    make_budget(org, "1", soft_limit_pct=80)
    api.post("/v1/events", headers=auth(key), json={"id": "big", "model": "m", "cost_usd": "0.85"})
    assert Alert.objects.get().kind == "soft"


def test_concurrent_holds_crossing_a_threshold_record_one_alert(server, org, key, make_budget):
    count_holds(org)
    make_budget(org, "1.00", soft_limit_pct=50)
    bodies = [{"team": f"t{i % 3}", "estimated_cost_usd": "0.01"} for i in range(300)]

    _reserve_many(server.url, key, bodies, concurrency=50)

    assert sorted(Alert.objects.values_list("kind", flat=True)) == ["hard", "soft"]


def test_delivery_posts_json_with_slack_text(api, org, key, make_budget, receiver):
    org.webhook_url = receiver.url
    org.alerts_count_holds = True
    org.save()
    make_budget(org, "10", scope="team", team="search", soft_limit_pct=50)
    reserve(api, key, "6")

    call_command("deliver_alerts", stdout=io.StringIO())

    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["alert"]["kind"] == "soft"
    assert (body["alert"]["scope"], body["alert"]["subject"]) == ("team", "search")
    assert body["alert"]["used_usd"] == "6" and body["alert"]["limit_usd"] == "10"
    assert "team budget 'search' (day)" in body["text"] and "60.0%" in body["text"]
    alert = Alert.objects.get()
    assert alert.delivery_status == "delivered" and alert.attempts == 1
    assert AlertDeliveryAttempt.objects.get().status_code == 200
    # Delivered alerts are not sent again.
    call_command("deliver_alerts", stdout=io.StringIO())
    assert len(receiver.bodies) == 1


def test_failed_delivery_is_retried_with_backoff_then_given_up(
    api, org, key, make_budget, receiver
):
    org.webhook_url = receiver.url
    org.alerts_count_holds = True
    org.save()
    make_budget(org, "1", soft_limit_pct=50)
    reserve(api, key, "0.6", team=None)
    receiver.statuses = [500, 503]

    call_command("deliver_alerts", stdout=io.StringIO())
    alert = Alert.objects.get()
    assert alert.delivery_status == "pending" and alert.attempts == 1
    assert alert.next_attempt_at > timezone.now() + timedelta(seconds=5)  # backoff
    assert alert.last_error == "HTTP 500"

    # Not due yet: nothing is sent.
    call_command("deliver_alerts", stdout=io.StringIO())
    assert AlertDeliveryAttempt.objects.filter(alert=alert).count() == 1

    Alert.objects.update(next_attempt_at=timezone.now())
    call_command("deliver_alerts", stdout=io.StringIO())
    Alert.objects.update(next_attempt_at=timezone.now())
    call_command("deliver_alerts", stdout=io.StringIO())
    alert.refresh_from_db()
    assert alert.delivery_status == "delivered" and alert.attempts == 3
    assert [a.status_code for a in alert.delivery_attempts.order_by("attempted_at")] == [
        500,
        503,
        200,
    ]


def test_unreachable_webhook_gives_up_after_max_attempts(
    api, org, key, make_budget, loopback_webhooks
):
    from budgets.services import ALERT_MAX_ATTEMPTS

    org.webhook_url = "http://127.0.0.1:1/nothing-listens"
    org.alerts_count_holds = True
    org.save()
    make_budget(org, "1")
    reserve(api, key, "1", team=None)

    for _ in range(ALERT_MAX_ATTEMPTS + 1):
        Alert.objects.filter(delivery_status="pending").update(next_attempt_at=timezone.now())
        call_command("deliver_alerts", stdout=io.StringIO())

    alert = Alert.objects.get(kind="hard")
    assert alert.delivery_status == "failed"
    assert alert.attempts == ALERT_MAX_ATTEMPTS
    assert "refused" in alert.last_error.lower()


def test_deliver_alerts_follow_stops_cleanly_on_sigterm(test_database_url, transactional_db):
    process = start_manage(test_database_url, "deliver_alerts", "--follow", "--interval", "0.5")
    # Signal it once it runs its loop (startup takes seconds on a loaded box).
    started = process.stdout.readline()
    assert "Delivering alerts every 0.5 s" in started, started
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=15)
    assert process.returncode == 0, started + output
    assert "Stopped on SIGTERM" in output


def test_open_alerts_show_on_the_dashboard_until_acknowledged(api, org, key, make_budget):
    count_holds(org)
    make_budget(org, "10", scope="team", team="search", soft_limit_pct=50)
    reserve(api, key, "6")

    shown = api.get("/v1/dashboard/summary", headers=auth(key)).json()["alerts"]
    Alert.objects.update(acknowledged_at=timezone.now())
    after = api.get("/v1/dashboard/summary", headers=auth(key)).json()["alerts"]

    assert [(a["kind"], a["scope"], a["subject"], a["used_usd"]) for a in shown] == [
        ("soft", "team", "search", "6")
    ]
    day = Alert.objects.get().window.period_start
    assert (
        f"team budget search (day of {day:%b} {day.day}) reached its soft limit: $6.00 of $10.00"
        in shown[0]["message"]
    )
    assert after == []
