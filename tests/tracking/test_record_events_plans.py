"""tollgate_record_events must not read an org's whole event table, whatever
plan PostgreSQL caches for it.

The case that went wrong: an org newer than the table statistics (a customer
who signed up after the last ANALYZE). The planner then estimates ~1 row for
its org_id, and the cached generic plan of the function's answer query walked
all of the org's events through index event_org_received to find the one just
inserted: ~35 ms of PostgreSQL CPU for one event at 100k events, and single
events serialised on the org's budget window behind it (the mixed locust
scenario fell to half its rate). New events are now answered from the
INSERT's RETURNING, and reservations are read by id.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from psycopg.types.json import Jsonb

from budgets.auth import ApiKeyInfo
from budgets.models import Budget, Organization, Team
from budgets.services import organization_create
from tracking import api as ingest

pytestmark = pytest.mark.django_db

ORG_EVENTS = 30_000
# One new event, priced and added to two windows, settling one hold: a few
# dozen index pages (68 when written). Walking the org's 30,000 events: ~1,000.
MAX_BUFFERS = 300


def add_events(org: Organization, count: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO tracking_requestevent (
                org_id, event_id, model, provider, started_at, received_at, input_tokens,
                cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
                cost_usd, priced, status, tags, payload_hash)
            SELECT %s, 'seed-' || g, 'gpt-4o', 'openai', now() - g * interval '1 second',
                   now() - g * interval '1 second', 100, 0, 0, 50, 0, 0.001, true, 'ok',
                   '{}', repeat('0', 64)
            FROM generate_series(1, %s) g
            """,
            [org.id, count],
        )


def loads(value: object) -> object:
    """Django's cursor hands json and jsonb over as text."""
    return json.loads(value) if isinstance(value, str) else value


def event(org: Organization, reservation_id: str | None) -> dict:
    key = ApiKeyInfo(
        key_id=0,
        org_id=org.id,
        org_slug=org.slug,
        strict=False,
        fail_mode="",
        team_slug=None,
        is_admin=False,
        revoked=False,
    )
    raw = {
        "id": str(uuid.uuid4()),
        "team": "search",
        "user": "alice",
        "model": "gpt-4o",
        "usage": {"input_tokens": 100, "output_tokens": 50},
        "reservation_id": reservation_id,
    }
    return {**ingest._event(raw, "", key), "idx": 0}


def hold(org: Organization) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_decide(%s, false, 'search', 'alice', 0.01, NULL, NULL, NULL,"
            " true, 300, NULL)",
            [org.id],
        )
        result = loads(cursor.fetchone()[0])
        assert result["status"] == "held", result
        return result["reservation_id"]


def buffers_of_one_event(org: Organization) -> int:
    """Shared buffers (hit + read) that recording one new event touches, with
    the function's plans cached as generic ones (after PL/pgSQL's five custom plans)."""
    with connection.cursor() as cursor:

        def record(explain: str = "") -> object:
            cursor.execute(
                f"{explain} SELECT tollgate_record_events(%s, false, %s)",
                [org.id, Jsonb([event(org, hold(org))])],
            )
            return loads(cursor.fetchone()[0])

        for _ in range(8):
            assert record()["status"] == "ok"
        plan = record("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)")
        top = plan[0]["Plan"]
        return top["Shared Hit Blocks"] + top["Shared Read Blocks"]


def test_a_new_org_unknown_to_the_statistics_records_an_event_without_reading_its_table():
    known = organization_create(slug="known", name="Known")
    add_events(known, ORG_EVENTS)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tracking_requestevent")  # statistics without the new org
    new = organization_create(slug="newcomer", name="Newcomer")
    add_events(new, ORG_EVENTS)
    team = Team.objects.create(org=new, slug="search")
    Budget.objects.create(org=new, scope="org", period="day", limit_usd=Decimal(1000))
    Budget.objects.create(org=new, scope="team", team=team, period="day", limit_usd=Decimal(100))

    buffers = buffers_of_one_event(new)

    assert buffers < MAX_BUFFERS, f"one event touched {buffers} buffers"
