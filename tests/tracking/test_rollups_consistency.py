"""Readers add the raw tail (events received after the aggregation watermark)
to the rollups. That is exact only if they never see rollups that hold an
event while the watermark they read still leaves it in the tail: a pass
writes its rollups and moves the watermark in one transaction, and each
reader reads both in one snapshot. Passes run here, over and over, while
GET /v1/usage's query and the dashboard summary read."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, connections

from tests.tracking.conftest import hours_ago
from tracking import selectors
from tracking.models import HourlyRollup
from tracking.services import rollups_refresh

pytestmark = pytest.mark.django_db(transaction=True)

READ_SECONDS = 3
EVENTS = 120


def summary_spend(org_id: int) -> Decimal:
    with connection.cursor() as cursor:
        # Range 7d; no custom dates, team, user, model or tag; now.
        cursor.execute(
            "SELECT tollgate_dashboard_summary(%s, 'UTC', '7d', NULL, NULL, NULL, NULL, NULL, "
            "NULL, NULL, NULL)",
            [org_id],
        )
        (value,) = cursor.fetchone()
    body = json.loads(value) if isinstance(value, str) else value
    return Decimal(body["summary"]["kpis"]["spend_usd"])


def test_readers_never_count_an_event_twice_or_miss_one_during_passes(org, make_event, no_lag):
    # Events that arrive one by one while the test reads: stored up front,
    # received_at spread over the next READ_SECONDS, so that each pass (no
    # lag) takes the ones whose time has come, in several hours at once.
    total = Decimal(0)
    for i in range(EVENTS):
        cost = Decimal(i + 1) / 1000
        make_event(org, started_at=hours_ago(1 + i % 6, minutes=i % 60), cost=str(cost))
        total += cost
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE tracking_requestevent SET received_at = statement_timestamp() "
            "+ (cost_usd * 1000 - 1) * %s * interval '1 second' WHERE org_id = %s",
            [READ_SECONDS / EVENTS, org.id],
        )
    query = selectors.UsageQuery(org_id=org.id, start=hours_ago(24), end=hours_ago(-1))

    stop = threading.Event()
    passes: list[int] = []
    failures: list[BaseException] = []

    def aggregate() -> None:
        try:
            while not stop.is_set():
                # One bucket per batch: several statements in each pass.
                passes.append(rollups_refresh(batch_size=1).buckets)
                time.sleep(0.2)  # ~8 more events, in several hours
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            connections.close_all()

    aggregator = threading.Thread(target=aggregate)
    aggregator.start()
    reads = 0
    try:
        deadline = time.monotonic() + READ_SECONDS + 0.5
        while time.monotonic() < deadline and not failures:
            usage = sum((row["cost_usd"] for row in selectors.usage_rows(query)), Decimal(0))
            assert usage == total, f"GET /v1/usage's query read {usage}, not {total}"
            spend = summary_spend(org.id)
            assert spend == total, f"the dashboard summary read {spend}, not {total}"
            reads += 1
    finally:
        stop.set()
        aggregator.join(30)
    assert not failures, failures
    # Passes that rolled events up in more than one batch, while reads went on.
    assert sum(1 for buckets in passes if buckets > 1) >= 3 and reads >= 10, (passes, reads)
    assert sum(r.requests for r in HourlyRollup.objects.all()) == EVENTS
