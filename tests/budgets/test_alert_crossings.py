"""Alerts people can trust: judged on settled spend unless the org counts
holds, fired once per crossing (again after spend fell back below and crossed
anew, never twice for one crossing, also from concurrent writers in two
server processes), with money and time as people read them, and a test alert
from the organization's admin page to a real local webhook."""

from __future__ import annotations

import http.client
import json
import threading
import zoneinfo
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from budgets.models import Alert, AuditEntry, Budget, BudgetWindow, Reservation
from budgets.services import alert_payload
from tests.budgets.test_alerts import Receiver
from tests.conftest import auth


@pytest.fixture
def receiver(loopback_webhooks):
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def staff_client(client, db):
    user = get_user_model().objects.create_superuser("boss", "", "pw-for-tests-only")
    client.force_login(user)
    return client


def hold(api, key, amount: str) -> str:
    response = api.post(
        "/v1/budget/reservations", headers=auth(key), json={"estimated_cost_usd": amount}
    )
    assert response.status_code == 201, response.text
    return response.json()["reservation_id"]


def release(api, key, reservation_id: str) -> None:
    response = api.post(f"/v1/budget/reservations/{reservation_id}/release", headers=auth(key))
    assert response.status_code == 200, response.text


def spend(api, key, event_id: str, cost: str, **fields) -> None:
    body = {"id": event_id, "model": "m", "cost_usd": cost, **fields}
    response = api.post("/v1/events", headers=auth(key), json=body)
    assert response.status_code in (200, 201), response.text


def kinds() -> list[str]:
    return list(Alert.objects.order_by("id").values_list("kind", flat=True))


def reset_window(staff_client, budget: Budget) -> None:
    staff_client.post(
        reverse("admin:budgets_budget_changelist"),
        {"action": "reset_current_window", "_selected_action": [budget.pk]},
    )


def test_a_hold_released_at_once_fires_nothing_when_settled_spend_counts(
    api, org, key, make_budget
):
    """The demo's case: a $1.27 hold on a $1.53 budget released at once."""
    make_budget(org, "1.53", soft_limit_pct=80)
    release(api, key, hold(api, key, "1.27"))  # 83% held, for a moment
    spend(api, key, "real", "0.67")  # 44%
    assert kinds() == []

    spend(api, key, "more", "0.60")  # $1.27 settled: 83%, the real crossing
    alert = Alert.objects.get()
    assert (alert.kind, alert.used_usd) == ("soft", Decimal("1.27"))


def test_a_threshold_fires_once_per_crossing_and_again_after_falling_below(
    api, org, key, make_budget, staff_client
):
    budget = make_budget(org, "1.00", soft_limit_pct=80)

    spend(api, key, "e1", "0.85")
    spend(api, key, "e2", "0.05")  # still over: the same crossing
    assert kinds() == ["soft"]

    reset_window(staff_client, budget)  # back below: re-armed, nothing fires
    window = BudgetWindow.objects.get(budget=budget)
    assert window.spent == 0 and not window.soft_alerted
    assert kinds() == ["soft"]

    spend(api, key, "e3", "0.81")  # crosses anew
    spend(api, key, "e4", "0.19")  # and reaches the limit
    assert kinds() == ["soft", "soft", "hard"]
    first, second, hard = Alert.objects.order_by("id")
    assert first.created_at <= second.created_at <= hard.created_at
    assert (second.used_usd, hard.used_usd) == (Decimal("0.81"), Decimal("1.00"))


def test_a_raised_limit_re_arms_and_a_lowered_one_crosses(api, org, key, admin_key, make_budget):
    make_budget(org, "1.00", soft_limit_pct=80)
    spend(api, key, "e1", "0.85")
    assert kinds() == ["soft"]

    def put(limit: str) -> None:
        response = api.put(
            f"/v1/budgets/org/{org.slug}/day",
            headers=auth(admin_key),
            json={"limit_usd": limit, "soft_limit_pct": 80},
        )
        assert response.status_code in (200, 201), response.text

    put("2.00")  # 42%: below again
    assert kinds() == ["soft"]
    put("1.00")  # 85% of the limit once more: a crossing
    assert kinds() == ["soft", "soft"]


def test_an_org_that_counts_holds_fires_on_holds_and_re_arms_on_release_and_expiry(
    api, make_org, make_key, make_budget
):
    org = make_org("holds", alerts_count_holds=True)
    key = make_key(org)
    make_budget(org, "1.00", soft_limit_pct=50)

    first = hold(api, key, "0.60")
    assert kinds() == ["soft"]
    release(api, key, first)  # back to 0: re-armed
    assert kinds() == ["soft"]
    assert not BudgetWindow.objects.get().soft_alerted

    second = hold(api, key, "0.55")
    assert kinds() == ["soft", "soft"]
    Reservation.objects.filter(pk=second).update(expires_at=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("SELECT tollgate_expire_reservations(100)")
    assert not BudgetWindow.objects.get().soft_alerted

    third = hold(api, key, "0.70")
    # Settled below what was held: the used amount stays over the soft limit.
    spend(api, key, "e1", "0.65", reservation_id=third)
    assert kinds() == ["soft", "soft", "soft"]
    window = BudgetWindow.objects.get()
    assert (window.spent, window.reserved, window.soft_alerted) == (Decimal("0.65"), 0, True)


def test_delivered_text_reads_money_and_time_as_people_do(api, make_org, make_key, make_budget):
    org = make_org("tz", time_zone="America/New_York")
    key = make_key(org)
    make_budget(org, "0.001", soft_limit_pct=50)
    spend(api, key, "tiny", "0.00061")

    alert = Alert.objects.select_related("org", "budget", "window").get()
    text = alert_payload(alert)["text"]
    assert "$0.00061 of $0.001 (61.0%)" in text, text
    assert "0.0006100000" not in text
    fired = alert.created_at.astimezone(zoneinfo.ZoneInfo("America/New_York"))
    assert f"at {fired:%Y-%m-%d %H:%M %Z}." in text, text


def _hammer(url: str, key: str, jobs: list[tuple[str, str]], concurrency: int) -> None:
    """Each job: ("hold", amount) takes a hold and releases it at once;
    ("event", id) records $0.01 of spend. All from `concurrency` threads."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    headers = {**auth(key), "Content-Type": "application/json"}
    local = threading.local()

    def one(job: tuple[str, str]) -> None:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(host, port, timeout=60)
        kind, value = job
        if kind == "hold":
            local.conn.request(
                "POST",
                "/v1/budget/reservations",
                json.dumps({"estimated_cost_usd": value}),
                headers,
            )
            response = local.conn.getresponse()
            body = json.loads(response.read())
            if response.status == 201:
                local.conn.request(
                    "POST", f"/v1/budget/reservations/{body['reservation_id']}/release", "", headers
                )
                local.conn.getresponse().read()
        else:
            body = {"id": value, "model": "m", "cost_usd": "0.01"}
            local.conn.request("POST", "/v1/events", json.dumps(body), headers)
            response = local.conn.getresponse()
            response.read()
            assert response.status in (200, 201)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, jobs))


def test_concurrent_writers_in_two_processes_fire_each_crossing_once(
    server, live_server_factory, org, key, make_budget
):
    """Spend only grows here (holds come and go but do not count), so each
    threshold is crossed exactly once, however the writers interleave."""
    other = live_server_factory(BUDGET_DB_TIMEOUT_MS="5000")
    make_budget(org, "1.00", soft_limit_pct=50, enforce=False)
    jobs: list[tuple[str, str]] = []
    for i in range(150):
        jobs.append(("event", f"e{i}"))
        if i % 5 < 2:
            jobs.append(("hold", "0.30"))
    threads = [
        threading.Thread(target=_hammer, args=(url, key, jobs[i::2], 12))
        for i, url in enumerate([server.url, other.url])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    window = BudgetWindow.objects.get()
    assert window.spent == Decimal("1.50") and window.reserved == 0
    assert sorted(kinds()) == ["hard", "soft"]


def test_admin_sends_a_test_alert_and_shows_the_answer(staff_client, org, receiver):
    org.webhook_url = receiver.url
    org.save()
    url = reverse("admin:budgets_organization_changelist")

    response = staff_client.post(url, {"action": "send_test_alert", "_selected_action": [org.pk]})
    receiver.statuses = [503]
    failed = staff_client.post(url, {"action": "send_test_alert", "_selected_action": [org.pk]})

    assert response.status_code == 302 and failed.status_code == 302
    assert [b["test"] for b in receiver.bodies] == [True, True]
    assert "test alert for acme" in receiver.bodies[0]["text"]
    shown = [str(m) for m in get_messages(failed.wsgi_request)]
    assert any("HTTP 200" in m and "UTC" in m and "ms" in m for m in shown), shown
    assert any("HTTP 503" in m for m in shown), shown
    entries = AuditEntry.objects.filter(action="test_webhook").order_by("id")
    assert [e.new["status_code"] for e in entries] == [200, 503]
    assert Alert.objects.count() == 0  # a test is not an alert


def test_admin_test_alert_without_a_webhook_says_so(staff_client, org):
    response = staff_client.post(
        reverse("admin:budgets_organization_changelist"),
        {"action": "send_test_alert", "_selected_action": [org.pk]},
        follow=True,
    )
    assert "No webhook URL" in response.content.decode()


@pytest.mark.parametrize(
    "amount",
    ["0", "1.27", "1234.5", "0.00041", "0.000412", "0.0099", "0.00999", "0.01", "-0.5", "1e-7"],
)
def test_sql_money_reads_like_python(amount, db):
    """The dashboard's alert texts (SQL) and the webhook's (Python) agree."""
    from config.hotpath.inputs import usd_for_people

    with connection.cursor() as cursor:
        cursor.execute("SELECT tollgate_usd_for_people(%s::numeric)", [amount])
        assert cursor.fetchone()[0] == usd_for_people(Decimal(amount))
