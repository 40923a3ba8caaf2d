"""Admin lists of the big tables run the same number of queries for 2 rows as
for 20: no query per row.

A team's and an end user's name includes its org's slug, so listing them
without their org joined ran two queries per row: 205 queries and ~400 ms
for a page of 100 events, the most expensive request of the mixed locust
scenario."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from budgets.models import EndUser, Organization, Reservation, Team
from tracking.models import DailyRollup, HourlyRollup, RequestEvent

pytestmark = pytest.mark.django_db

HOUR = datetime(2026, 3, 10, 12, tzinfo=UTC)


def add_rows(org: Organization, start: int, count: int) -> None:
    for n in range(start, start + count):
        team = Team.objects.create(org=org, slug=f"team-{n}")
        user = EndUser.objects.create(org=org, external_id=f"user-{n}")
        common = {"org": org, "team": team, "user": user, "model": "gpt-4o"}
        RequestEvent.objects.create(
            **common, event_id=f"e{n}", provider="openai", started_at=HOUR,
            received_at=HOUR, input_tokens=1, cache_read_tokens=0, cache_write_tokens=0,
            output_tokens=1, reasoning_tokens=0, cost_usd=Decimal("0.01"), priced=True,
            status="ok", payload_hash="0" * 64,
        )  # fmt: skip
        HourlyRollup.objects.create(**common, hour=HOUR + timedelta(hours=n))
        DailyRollup.objects.create(**common, day=HOUR + timedelta(days=n))
        Reservation.objects.create(
            org=org, team=team, user=user, amount=Decimal("0.01"), status="active",
            expires_at=HOUR, window_ids=[],
        )  # fmt: skip


def queries_for(client, model) -> int:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize(
    "model", [RequestEvent, HourlyRollup, DailyRollup, Reservation], ids=lambda m: m.__name__
)
def test_list_queries_do_not_grow_with_rows(client, model):
    client.force_login(get_user_model().objects.create_superuser("boss", "", "pw-for-tests"))
    org = Organization.objects.create(slug="acme", name="Acme")
    add_rows(org, 0, 2)
    few = queries_for(client, model)
    add_rows(org, 2, 18)

    assert queries_for(client, model) == few


def test_events_cannot_be_deleted_from_admin(client):
    """Events are the ledger that budget windows and rollups were added up
    from; admin lists them without a delete action (and so without the
    per-row checkbox) and refuses the delete page."""
    client.force_login(get_user_model().objects.create_superuser("boss", "", "pw-for-tests"))
    org = Organization.objects.create(slug="acme", name="Acme")
    add_rows(org, 0, 2)
    event = RequestEvent.objects.first()

    listing = client.get(reverse("admin:tracking_requestevent_changelist"))
    delete = client.post(
        reverse("admin:tracking_requestevent_delete", args=[event.pk]), {"post": "yes"}
    )
    bulk = client.post(
        reverse("admin:tracking_requestevent_changelist"),
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )

    assert listing.status_code == 200
    assert b'name="_selected_action"' not in listing.content
    assert delete.status_code == 403
    assert bulk.status_code in (200, 302)  # "no action selected": nothing done
    assert RequestEvent.objects.count() == 2
