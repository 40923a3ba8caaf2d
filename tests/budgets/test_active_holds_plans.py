"""Releasing a hold and settling one by an event read that hold, not every
active hold of the database, also when the statistics of the partial index
of active holds (reservation_active_expiry) are stale.

A VACUUM while few holds are active records that index as empty; a burst of
holds after it leaves that record in place until the next VACUUM or ANALYZE
(the fixture makes that state: 500 expired holds, VACUUM, then 20,000 active
holds of another org and the ones the tests release or settle).
A statement whose condition included `status = 'active'` was then planned on
that "empty" index and read every active hold: ~200 ms for one batch of
events with 400,000 holds active. An event that named no hold read the
whole table too: its answer joined the holds it names, and the generic plan
hashed the table. The functions now lock and read a hold by its primary key
and check its status on what they read.

What a call read is counted by PostgreSQL itself: EXPLAIN (ANALYZE, BUFFERS)
of the function call counts the buffers its statements touched.
"""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest

from budgets.auth import ApiKeyInfo
from budgets.models import Organization, Reservation
from config.hotpath import db
from tracking import api as ingest

pytestmark = pytest.mark.django_db(transaction=True)

OTHER_HOLDS = 20_000  # active holds of another org, ~400 heap pages
# A hold found by primary key, its windows and the index entries it changes
# take a few dozen buffers; reading the other holds takes hundreds.
MOST_BUFFERS = 200
# PL/pgSQL plans a statement for its first five runs with the values of each
# call, then may keep a generic plan: the one the stale statistics misled.
WARM_UP_CALLS = 8


@pytest.fixture
def conn() -> psycopg.Connection:
    with psycopg.connect(**db.connection_kwargs()) as connection:
        yield connection


@pytest.fixture
def org_with_many_holds(make_org, make_budget, conn) -> Organization:
    """`acme` with WARM_UP_CALLS + 1 active holds, made after statistics that
    say no hold is active and while OTHER_HOLDS holds of another org are."""
    org = make_org("acme")
    make_budget(org, "1000000")
    item = {
        "org_id": org.id, "strict": False, "team": "search",
        "user": "alice", "amount": "0.01", "model": None, "input_tokens": None,
        "max_output_tokens": None, "ttl_seconds": 3600,
    }  # fmt: skip

    def hold(count: int) -> None:
        conn.execute("SELECT tollgate_decide_many(%s::jsonb)", [json.dumps([item] * count)])

    # Statistics taken when every hold had expired: the index looks empty.
    hold(500)
    conn.execute("UPDATE budgets_reservation SET expires_at = now() - interval '1 second'")
    conn.execute("SELECT tollgate_expire_reservations(1000)")
    conn.execute("VACUUM ANALYZE budgets_reservation")
    # Then a burst: another org's holds (rows of the table, not decisions:
    # only their number matters here) and acme's own.
    other = make_org("busy")
    conn.execute(
        "INSERT INTO budgets_reservation (id, org_id, amount, status, window_ids, model,"
        " created_at, expires_at)"
        " SELECT gen_random_uuid(), %s, 0.01, 'active', '{}', '', now(), now() + interval '1 hour'"
        " FROM generate_series(1, %s)",
        [other.id, OTHER_HOLDS],
    )
    hold(WARM_UP_CALLS + 1)
    assert Reservation.objects.filter(status="active").count() == OTHER_HOLDS + WARM_UP_CALLS + 1
    return org


def buffers_of(conn: psycopg.Connection, call: str, params: list) -> int:
    """Shared buffers the call touched (tables, indexes and catalogs)."""
    plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {call}", params).fetchone()[0]
    top = plan[0]["Plan"]
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"]


def event(org: Organization, event_id: str, **fields: str) -> str:
    key = ApiKeyInfo(
        key_id=0, org_id=org.id, org_slug=org.slug,
        strict=False, fail_mode="", team_slug=None, is_admin=False, revoked=False,
    )  # fmt: skip
    raw = {"id": event_id, "team": "search", "user": "alice", "model": "gpt-4o", **fields}
    events, _ = ingest.validate(raw, key)
    return json.dumps(events, default=str)


def record_events(conn: psycopg.Connection, org: Organization, events: str) -> int:
    return buffers_of(
        conn,
        "SELECT tollgate_record_events(%s, %s, %s::jsonb)",
        [org.id, False, events],
    )


def test_a_release_reads_only_its_hold(org_with_many_holds, conn):
    org = org_with_many_holds
    *first, hold = Reservation.objects.filter(org=org, status="active").values_list("id", flat=True)
    for other in first:
        buffers_of(conn, "SELECT tollgate_release(%s, %s)", [org.id, other])

    buffers = buffers_of(conn, "SELECT tollgate_release(%s, %s)", [org.id, hold])

    assert Reservation.objects.get(id=hold).status == "released"
    assert buffers < MOST_BUFFERS, f"{buffers} buffers for one release"
    # Idempotent as before: a second release changes nothing.
    again = conn.execute("SELECT tollgate_release(%s, %s)", [org.id, hold]).fetchone()[0]
    assert again == {"status": "released", "released_now": False}


def test_settling_by_an_event_reads_only_its_hold(org_with_many_holds, conn):
    org = org_with_many_holds
    *first, hold = Reservation.objects.filter(org=org, status="active").values_list("id", flat=True)
    for n, other in enumerate(first):
        record_events(conn, org, event(org, f"w-{n}", cost_usd="0.02", reservation_id=str(other)))

    buffers = record_events(conn, org, event(org, "e", cost_usd="0.02", reservation_id=str(hold)))

    assert Reservation.objects.get(id=hold).status == "settled"
    assert not Reservation.objects.filter(org=org, status="active").exists()
    assert buffers < MOST_BUFFERS, f"{buffers} buffers for one event"


def test_an_event_without_a_hold_reads_no_holds(org_with_many_holds, conn):
    org = org_with_many_holds
    for n in range(WARM_UP_CALLS):
        record_events(conn, org, event(org, f"w-{n}", cost_usd="0.02"))

    buffers = record_events(conn, org, event(org, "e", cost_usd="0.02"))

    assert buffers < MOST_BUFFERS, f"{buffers} buffers for one event"
    assert Reservation.objects.filter(org=org, status="active").count() == WARM_UP_CALLS + 1
    spent = conn.execute(
        "SELECT spent FROM budgets_budgetwindow w JOIN budgets_budget b ON b.id = w.budget_id"
        " WHERE b.org_id = %s",
        [org.id],
    ).fetchone()[0]
    assert spent == Decimal("0.02") * (WARM_UP_CALLS + 1)
