"""The first use of a model with no price raises an alert: once per
organization and model name, in the transaction that records the event,
delivered through the org's webhook like a budget's alert, shown in admin.

Through the real server and PostgreSQL; the races through two connections
of their own."""

from __future__ import annotations

import io
import json
import threading
import time
from decimal import Decimal

import psycopg
import pytest
from django.core.management import call_command
from django.urls import reverse

from budgets.models import Alert
from budgets.services import alert_payload
from tests.budgets.test_alerts import receiver  # noqa: F401 (a fixture)
from tests.tracking.test_record_events import event, make_price, only_result, post
from tracking.models import RequestEvent

MYSTERY = "tg-mystery"  # no price entry or alias resolves it


@pytest.fixture
def catalog(db):
    # The fallback rates are the catalog's highest: $5/M input, $10/M output,
    # so 1000 input + 100 output tokens of a model with no price cost 0.006.
    make_price("tg-plain", input="1", output="10")
    make_price("tg-big", input="5", output="2")


def unpriced_alerts(org) -> list[Alert]:
    return list(Alert.objects.filter(org=org, kind="unpriced_model").order_by("model"))


def test_the_first_event_of_a_model_with_no_price_raises_one_alert(api, org, key, catalog):
    assert only_result(post(api, key, event("priced-1")))["priced"] is True
    assert unpriced_alerts(org) == []  # a priced model raises nothing

    first = only_result(post(api, key, event("m-1", model=MYSTERY)))
    assert (first["priced"], first["cost_usd"]) == (False, "0.006")
    [alert] = unpriced_alerts(org)
    assert (alert.model, alert.used_usd, alert.budget, alert.window, alert.limit_usd) == (
        MYSTERY,
        Decimal("0.006"),
        None,
        None,
        None,
    )
    assert alert.delivery_status == "skipped"  # the org has no webhook

    only_result(post(api, key, event("m-2", model=MYSTERY)))
    alert.acknowledged_at = alert.created_at
    alert.save(update_fields=["acknowledged_at"])
    only_result(post(api, key, event("m-3", model=MYSTERY)))
    assert [a.pk for a in unpriced_alerts(org)] == [alert.pk]  # once, acknowledged or not

    only_result(post(api, key, event("other-1", model="tg-mystery-2")))
    assert [a.model for a in unpriced_alerts(org)] == [MYSTERY, "tg-mystery-2"]


def test_a_batch_alerts_each_new_name_once_with_what_its_events_were_charged(
    api, org, key, make_org, make_key, catalog
):
    body = {
        "events": [
            event("b-1", model=MYSTERY),
            event("b-2", model="tg-other"),
            event("b-3", model=MYSTERY, usage={"input_tokens": 2000, "output_tokens": 0}),
            event("b-4"),  # priced
            # The caller's cost: priced by the caller, nothing to alert.
            event("b-5", model="tg-caller-priced", cost_usd="0.5"),
        ]
    }
    response = post(api, key, body)
    assert response.status_code == 201, response.text

    # 0.006 + 2000 x $5/M = 0.016; tg-other: 0.006.
    assert [(a.model, a.used_usd) for a in unpriced_alerts(org)] == [
        (MYSTERY, Decimal("0.016")),
        ("tg-other", Decimal("0.006")),
    ]
    # Per organization: another org's first use of the name is its own.
    other = make_org("globex")
    only_result(post(api, make_key(other), event("g-1", model=MYSTERY)))
    assert [a.model for a in unpriced_alerts(other)] == [MYSTERY]
    assert len(unpriced_alerts(org)) == 2


def test_a_replay_is_not_a_first_use(api, org, key, catalog):
    only_result(post(api, key, event("r-1", model=MYSTERY)))
    Alert.objects.filter(org=org).delete()

    replay = only_result(post(api, key, event("r-1", model=MYSTERY)), status=200)
    assert replay["duplicate"] is True
    assert unpriced_alerts(org) == []


def test_under_the_zero_policy_the_alert_says_it_counts_for_nothing(api, org, key, catalog):
    org.unpriced_policy = "zero"
    org.save()

    only_result(post(api, key, event("z-1", model=MYSTERY)))

    [alert] = unpriced_alerts(org)
    assert alert.used_usd == 0
    text = alert_payload(alert)["text"]
    assert "charged $0.00 and counts against no budget until repriced" in text


def test_a_rejected_batch_leaves_no_alert(api, org, key, catalog):
    only_result(post(api, key, event("x-1")))
    # x-1 again with another payload: 409, the whole batch rolls back.
    response = post(
        api, key, {"events": [event("x-2", model=MYSTERY), event("x-1", model="tg-big")]}
    )
    assert response.status_code == 409, response.text
    assert unpriced_alerts(org) == []


def test_delivery_posts_the_model_and_money_as_people_read_it(
    api,
    org,
    key,
    catalog,
    receiver,  # noqa: F811
):
    org.webhook_url = receiver.url
    org.time_zone = "America/New_York"
    org.save()

    only_result(post(api, key, event("d-1", model="openai/gpt-9")))
    call_command("deliver_alerts", stdout=io.StringIO())

    [body] = receiver.bodies
    alert = Alert.objects.get(org=org)
    assert body["alert"] == {
        "id": alert.pk,
        "kind": "unpriced_model",
        "org": "acme",
        "model": "openai/gpt-9",
        "used_usd": "0.006",
        "created_at": alert.created_at.isoformat(),
    }
    assert body["text"].startswith(
        "Tollgate: acme sent model 'openai/gpt-9', which has no price, at "
    )
    assert " E" in body["text"]  # EST or EDT: the org's zone
    assert (
        "its first use was charged $0.006. Add its price or an alias, then reprice."
        in (body["text"])
    )
    alert.refresh_from_db()
    assert (alert.delivery_status, alert.attempts) == ("delivered", 1)


def test_admin_lists_and_shows_an_unpriced_model_alert(api, org, key, catalog, admin_client):
    only_result(post(api, key, event("a-1", model=MYSTERY)))
    alert = Alert.objects.get(org=org)

    listing = admin_client.get(reverse("admin:budgets_alert_changelist")).content.decode()
    assert f"Model with no price: acme {MYSTERY}" in listing
    assert '<td class="field-used">$0.006</td>' in listing
    assert '<td class="field-limit">-</td>' in listing

    page = admin_client.get(reverse("admin:budgets_alert_change", args=[alert.pk]))
    assert page.status_code == 200
    content = page.content.decode()
    assert MYSTERY in content and "$0.006" in content
    assert "0.0060000000" not in content  # money as money, not ten decimals


def test_the_database_refuses_a_budget_alert_without_a_budget(org):
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        Alert.objects.create(org=org, kind="soft", used_usd=1, limit_usd=2)


# --- concurrent first uses, through two connections of their own -------------------


def record_sql(conn: psycopg.Connection, org_id: int, event_ids_models: list[tuple[str, str]]):
    events = [
        {
            "idx": i,
            "event_id": event_id,
            "model": model,
            "input_tokens": 1000,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": 100,
            "reasoning_tokens": 0,
            "status": "ok",
            "payload_hash": event_id,
        }
        for i, (event_id, model) in enumerate(event_ids_models)
    ]
    return conn.execute(
        "SELECT tollgate_record_events(%s, false, %s)", [org_id, json.dumps(events)]
    ).fetchone()[0]


def waiting_on_a_lock(watcher: psycopg.Connection, pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        row = watcher.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()
        if row and row[0] == "Lock":
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("first_commits", [True, False], ids=["commit", "rollback"])
def test_concurrent_first_uses_of_a_name_raise_one_alert(
    org, catalog, test_database_url, first_commits
):
    """The second recording waits on the first's alert (the unique index):
    one alert if the first commits, the second's if it rolls back."""
    with (
        psycopg.connect(test_database_url) as first,
        psycopg.connect(test_database_url, autocommit=True) as second,
        psycopg.connect(test_database_url, autocommit=True) as watcher,
    ):
        record_sql(first, org.pk, [("c-1", MYSTERY), ("c-2", "tg-z")])
        outcome: list[object] = []
        thread = threading.Thread(
            target=lambda: outcome.append(
                record_sql(second, org.pk, [("c-3", "tg-z"), ("c-4", MYSTERY)])
            )
        )
        thread.start()
        assert waiting_on_a_lock(watcher, second.info.backend_pid)
        if first_commits:
            first.commit()
        else:
            first.rollback()
        thread.join(10)
        assert outcome and outcome[0]["status"] == "ok"

    alerts = unpriced_alerts(org)
    assert [a.model for a in alerts] == [MYSTERY, "tg-z"]
    events = set(RequestEvent.objects.filter(org=org).values_list("event_id", flat=True))
    assert events == ({"c-1", "c-2", "c-3", "c-4"} if first_commits else {"c-3", "c-4"})
