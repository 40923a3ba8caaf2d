"""A change of an org's time zone carries each budget's current window (spend,
holds, alerts) into the new zone's period (tollgate_change_time_zone): no
budget opens empty, and a running server enforces the new zone at its next
request, whatever it has cached. Settings change through PATCH /v1/org."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest

from budgets.audit import SYSTEM
from budgets.models import AuditEntry, BudgetWindow, Organization
from budgets.services import organization_update
from tests.conftest import auth

ZONES = ("Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC")


def day_end(zone: str, at: datetime) -> str:
    """Where the local day that contains `at` ends, as the API writes it."""
    local = at.astimezone(ZoneInfo(zone)).date() + timedelta(days=1)
    end = datetime(local.year, local.month, local.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)
    return end.strftime("%Y-%m-%dT%H:%M:%SZ")


def reserve(api, key, amount: str, team="research"):
    body = {"team": team, "estimated_cost_usd": amount}
    return api.post("/v1/budget/reservations", json=body, headers=auth(key))


def patch_org(api, key, **body):
    return api.patch("/v1/org", json=body, headers=auth(key))


def test_changing_zones_never_opens_an_empty_budget(api, org, key, admin_key):
    """The issue's case: $10/day admitted $10 per zone, $30 in all."""
    put = api.put(
        "/v1/budgets/team/research/day", json={"limit_usd": "10"}, headers=auth(admin_key)
    )
    assert put.status_code == 200, put.text
    held = reserve(api, key, "10")
    assert held.status_code == 201, held.text

    for zone in ZONES[:2]:
        changed = patch_org(api, admin_key, time_zone=zone)
        assert changed.status_code == 200, changed.text
        assert changed.json()["organization"]["time_zone"] == zone
        refused = reserve(api, key, "0.01")
        assert refused.status_code == 402, refused.text
        budget = refused.json()["error"]
        assert (budget["reserved_usd"], budget["remaining_usd"]) == ("10", "0")
        # The window is the new zone's day.
        assert budget["resets_at"] == day_end(zone, datetime.now(UTC))

    windows = BudgetWindow.objects.filter(budget__org=org)
    assert sum(w.spent + w.reserved for w in windows) == Decimal("10")

    # The hold settles in the window it moved with: $4 spent, $6 free again.
    event = {
        "id": "e1",
        "team": "research",
        "model": "m",
        "cost_usd": "4",
        "reservation_id": held.json()["reservation_id"],
    }
    settled = api.post("/v1/events", json=event, headers=auth(key))
    assert settled.status_code == 201, settled.text
    assert reserve(api, key, "6.01").status_code == 402
    assert reserve(api, key, "6").status_code == 201


def test_a_running_server_enforces_the_new_zone_at_its_next_request(api, org, key, make_budget):
    make_budget(org, "10", scope="team", team="research")
    first = reserve(api, key, "1")  # the server has the key (and the org) cached now
    assert first.status_code == 201, first.text
    assert first.json()["budgets"][0]["resets_at"] == day_end("UTC", datetime.now(UTC))

    organization_update(org_id=org.pk, changes={"time_zone": "Pacific/Kiritimati"}, actor=SYSTEM)

    second = reserve(api, key, "1")
    assert second.status_code == 201, second.text
    budget = second.json()["budgets"][0]
    assert budget["resets_at"] == day_end("Pacific/Kiritimati", datetime.now(UTC))
    assert budget["reserved_usd"] == "2"


def test_a_window_created_during_the_change_is_moved_with_the_others(
    org, make_budget, test_database_url
):
    """Window creation holds a key share lock on the org row: the change waits
    for it, then moves the new window too, instead of leaving a window of the
    old zone that no later request would find."""
    budget = make_budget(org, "10")
    with (
        psycopg.connect(test_database_url) as holder,
        psycopg.connect(test_database_url) as changer,
        psycopg.connect(test_database_url, autocommit=True) as watch,
    ):
        result = holder.execute(
            "SELECT tollgate_decide(%s, false, NULL, NULL, 3, NULL, NULL, NULL, true, 300, NULL)",
            [org.pk],
        ).fetchone()[0]
        assert result["status"] == "held", result

        failures: list[Exception] = []

        def change() -> None:
            try:
                changer.execute(
                    "SELECT tollgate_change_time_zone(%s, 'Pacific/Kiritimati', now())", [org.pk]
                )
                changer.commit()
            except psycopg.Error as exc:
                failures.append(exc)

        thread = threading.Thread(target=change)
        thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = watch.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                [changer.info.backend_pid],
            ).fetchone()
            if row and row[0] == "Lock":
                break
            time.sleep(0.01)
        else:
            pytest.fail("the change of zone never waited for the window being created")
        holder.commit()
        thread.join(10)
        assert not failures, failures

    window = BudgetWindow.objects.get(budget=budget)
    assert window.reserved == Decimal("3")
    assert window.period_end.strftime("%Y-%m-%dT%H:%M:%SZ") == day_end(
        "Pacific/Kiritimati", datetime.now(UTC)
    )


def test_a_window_the_new_zone_has_already_is_folded_in(org, make_budget):
    """Back and forth: the window an earlier zone made for the new period
    (kept by its holds) and the carried one become one, holds included."""
    budget = make_budget(org, "10")
    now = datetime.now(UTC)
    start = datetime(now.year, now.month, now.day, tzinfo=UTC)
    BudgetWindow.objects.create(
        budget=budget, period_start=start, period_end=start + timedelta(days=1), reserved=2
    )
    organization_update(org_id=org.pk, changes={"time_zone": "Pacific/Kiritimati"}, actor=SYSTEM)
    moved = BudgetWindow.objects.get(budget=budget)
    moved.spent = Decimal("1")
    moved.save()
    # An older window at UTC's start of today, as an earlier stay in UTC left it.
    BudgetWindow.objects.create(
        budget=budget, period_start=start, period_end=start + timedelta(days=1), spent=4
    )
    organization_update(org_id=org.pk, changes={"time_zone": "UTC"}, actor=SYSTEM)
    (window,) = BudgetWindow.objects.filter(budget=budget)
    assert (window.period_start, window.spent, window.reserved) == (start, 5, 2)


def test_patch_org_changes_settings_and_records_them(api, org, admin_key):
    changed = patch_org(
        api,
        admin_key,
        unpriced_policy="deny",
        max_request_usd="2.50",
        alerts_count_holds=True,
        fallback_input_per_token=None,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()["organization"]
    assert (body["unpriced_policy"], body["max_request_usd"], body["alerts_count_holds"]) == (
        "deny",
        "2.5",
        True,
    )
    assert api.get("/v1/org", headers=auth(admin_key)).json() == changed.json()
    (entry,) = AuditEntry.objects.filter(object_type="organization", action="update")
    assert entry.actor_kind == "key" and entry.actor_label.startswith("key ")
    assert (entry.old["unpriced_policy"], entry.new["unpriced_policy"]) == ("fallback", "deny")
    assert entry.new["max_request_usd"] == "2.5"

    # Changing nothing records nothing.
    again = patch_org(api, admin_key, unpriced_policy="deny")
    assert again.status_code == 200
    assert AuditEntry.objects.filter(object_type="organization", action="update").count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"time_zone": 5}, "time_zone"),
        ({"strict": "yes"}, "strict"),
        ({"unpriced_policy": "free"}, "unpriced_policy"),
        ({"max_request_usd": "-1"}, "max_request_usd"),
        ({"max_request_usd": "lots"}, "max_request_usd"),
        ({"fail_mode": "sometimes"}, "fail_mode"),
        ({"webhook_url": "not a url"}, "webhook_url"),
        ({"slug": "other"}, "slug"),
        ({"time_zone": "Europe/Paris", "strict": 1}, "strict"),
    ],
)
def test_patch_org_refuses_bad_settings_and_writes_nothing(api, org, admin_key, body, field):
    refused = patch_org(api, admin_key, **body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == field
    org.refresh_from_db()
    assert (org.time_zone, org.strict, org.unpriced_policy) == ("UTC", False, "fallback")
    assert not AuditEntry.objects.filter(object_type="organization", action="update").exists()


def test_patch_org_needs_an_admin_key_of_the_whole_org(api, org, key, make_key):
    team_admin = make_key(org, team="research", admin=True)
    for caller in (key, team_admin):
        refused = patch_org(api, caller, strict=True)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
    # Reading is open to every key of the org.
    assert api.get("/v1/org", headers=auth(key)).json()["organization"]["slug"] == org.slug
    not_an_object = api.patch("/v1/org", content=b"[1]", headers=auth(make_key(org, admin=True)))
    assert not_an_object.json()["error"]["code"] == "malformed_json"
    assert Organization.objects.get(pk=org.pk).strict is False


def test_patch_org_body_must_name_a_setting(api, org, admin_key):
    refused = api.patch("/v1/org", content=json.dumps({}), headers=auth(admin_key))
    assert refused.status_code == 422, refused.text
