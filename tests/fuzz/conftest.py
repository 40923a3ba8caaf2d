"""The fuzz suite's world, client and bookkeeping.

`world`: two organizations with keys of every kind, budgets on every tier,
a price, an active hold and a recorded event (so that windows exist and a
stray write to them would show). `fuzzer`: sends cases over one kept-alive
connection, checks each answer against API.md, counts requests per endpoint,
and takes digests of every table the API can write.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from django.db import connection
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from budgets.models import (
    Alert,
    AlertDeliveryAttempt,
    ApiKey,
    AuditEntry,
    Budget,
    BudgetWindow,
    EndUser,
    Organization,
    Reservation,
    Team,
)
from budgets.services import api_key_create, organization_create
from dashboard.models import Membership
from tests.conftest import auth
from tests.fuzz.cases import Case, Keys
from tracking.models import AggregationState, HourlyRollup, Price, RequestEvent

# Thousands of requests: httpx's line per request would bury a failure.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Requests sent, per endpoint, over the whole session (printed at the end).
COUNTS: Counter[str] = Counter()
# Fuzz tests that ran to the end (the total is checked only when all did).
COMPLETED: set[str] = set()

# Status -> the codes API.md documents for it.
DOCUMENTED = {
    400: {"malformed_json", "malformed_query"},
    401: {"unauthenticated"},
    402: {"budget_exceeded"},
    403: {"forbidden"},
    404: {"not_found"},
    405: {"method_not_allowed"},
    408: {"request_timeout"},
    409: {"conflict"},
    413: {"payload_too_large"},
    414: {"uri_too_long"},
    422: {"invalid_field"},
    431: {"headers_too_large"},
}

# Every table a request could write, with what of each row counts. API keys
# leave out last_used_at, which every authenticated request may move.
WATCHED = [
    Organization,
    Team,
    EndUser,
    Budget,
    BudgetWindow,
    Reservation,
    RequestEvent,
    HourlyRollup,
    Alert,
    AlertDeliveryAttempt,
    Price,
    AggregationState,
    Membership,
    AuditEntry,
]


def _digest_sql() -> str:
    parts = []
    for model in WATCHED:
        table, pk = model._meta.db_table, model._meta.pk.column
        parts.append(
            f"(SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t.{pk})), '') "
            f"FROM {table} t)"
        )
    parts.append(
        "(SELECT count(*) || ':' || coalesce(md5(string_agg((t.id, t.key_hash, t.revoked_at, "
        f"t.is_admin)::text, '|' ORDER BY t.id)), '') FROM {ApiKey._meta.db_table} t)"
    )
    return "SELECT " + ", ".join(parts)


DIGEST_SQL = _digest_sql()
TABLE_NAMES = [m.__name__ for m in WATCHED] + ["ApiKey"]


def snapshot() -> dict[str, str]:
    """Row count and an md5 of every row of each watched table, in one query."""
    with connection.cursor() as cursor:
        cursor.execute(DIGEST_SQL)
        return dict(zip(TABLE_NAMES, cursor.fetchone(), strict=True))


class Fuzzer:
    def __init__(self, client: httpx.Client, test_name: str) -> None:
        self.client = client
        self.test_name = test_name
        self.counts: Counter[str] = Counter()

    def require(self, minimum: int) -> None:
        """This test sent at least `minimum` requests (its share of 10,000)."""
        sent = sum(self.counts.values())
        assert sent >= minimum, f"only {sent} requests: {dict(self.counts)}"
        COMPLETED.add(self.test_name)

    def send(self, case: Case) -> httpx.Response:
        try:
            response = self.client.request(
                case.method, case.path, headers=case.headers, content=case.body
            )
        except httpx.TimeoutException as exc:
            raise AssertionError(f"no answer in time (a hang): {case.describe()}") from exc
        self.counts[case.endpoint] += 1
        COUNTS[case.endpoint] += 1
        check_answer(case, response)
        return response

    def run(self, strategy: st.SearchStrategy[Case], *, examples: int) -> None:
        """`examples` lists of 4-12 cases; the tables must not change
        over any list (every case is one that must be rejected)."""
        # Nothing else writes between two lists: each list's "after" is the
        # next one's "before" (one digest query per list, not two).
        last = [snapshot()]

        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(st.lists(strategy, min_size=4, max_size=12))
        def run(cases: list[Case]) -> None:
            before = last[0]
            try:
                for case in cases:
                    self.send(case)
            finally:
                after = last[0] = snapshot()
            changed = [name for name in before if before[name] != after[name]]
            assert not changed, f"rejected requests wrote to {changed}: " + " | ".join(
                case.describe() for case in cases
            )

        run()


def check_answer(case: Case, response: httpx.Response) -> None:
    status = response.status_code

    def fail(why: str) -> None:
        raise AssertionError(
            f"{why}: got {status} {response.text[:400]!r} for {case.describe()}; "
            f"expected {sorted(case.statuses)} field={case.field!r}"
        )

    if status not in case.statuses:
        fail("unexpected status")
    if status < 400:
        return
    if response.headers.get("content-type") != "application/json":
        fail("not the JSON error shape")
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        fail("error body is not JSON")
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        fail("no error object")
    if error.get("code") not in DOCUMENTED[status]:
        fail("undocumented error code")
    if not isinstance(error.get("message"), str) or not error["message"]:
        fail("no message")
    if "field" in error and not isinstance(error["field"], str):
        fail("field is not a string")
    if case.field is not None and status in (403, 404, 422) and error.get("field") != case.field:
        fail(f"error names field {error.get('field')!r}")


@pytest.fixture
def world(server, transactional_db) -> Keys:
    org = organization_create(slug="fuzz")
    other = organization_create(slug="fuzz-other")
    secret = {
        "admin": api_key_create(org=org, is_admin=True)[1],
        "plain": api_key_create(org=org)[1],
        "team": api_key_create(org=org, team_slug="search")[1],
        "team_admin": api_key_create(org=org, team_slug="search", is_admin=True)[1],
    }
    revoked, secret["revoked"] = api_key_create(org=org)
    ApiKey.objects.filter(pk=revoked.pk).update(revoked_at=datetime.now(UTC))
    other_key = api_key_create(org=other)[1]
    search = Team.objects.get(org=org, slug="search")
    alice = EndUser.objects.create(org=org, external_id="alice")
    for scope, team, user, period, limit, enforce in [
        ("org", None, None, "day", "1000", True),
        ("org", None, None, "total", "5000", False),
        ("team", search, None, "month", "100", True),
        ("user", None, alice, "day", "10", False),
    ]:
        Budget.objects.create(
            org=org,
            scope=scope,
            team=team,
            user=user,
            period=period,
            limit_usd=Decimal(limit),
            enforce=enforce,
        )
    Budget.objects.create(org=other, scope="org", period="day", limit_usd=Decimal("50"))
    Price.objects.create(
        provider="openai",
        model="tg-plain",
        effective_from=datetime(2000, 1, 1, tzinfo=UTC),
        input_per_token=Decimal("0.000001"),
        output_per_token=Decimal("0.00001"),
    )
    with httpx.Client(base_url=server.url, timeout=10) as client:
        hold = {"team": "search", "user": "alice", "estimated_cost_usd": "0.5", "ttl_seconds": 3600}
        mine = client.post("/v1/budget/reservations", json=hold, headers=auth(secret["admin"]))
        theirs = client.post("/v1/budget/reservations", json=hold, headers=auth(other_key))
        event = {
            "id": "seed-1",
            "team": "search",
            "user": "alice",
            "model": "tg-plain",
            "usage": {"input_tokens": 10, "output_tokens": 1},
        }
        recorded = client.post("/v1/events", json=event, headers=auth(secret["admin"]))
    assert mine.status_code == theirs.status_code == 201, (mine.text, theirs.text)
    assert recorded.status_code == 201, recorded.text
    assert not Team.objects.filter(slug="fresh-team").exists()
    return Keys(
        admin=secret["admin"],
        plain=secret["plain"],
        team=secret["team"],
        team_admin=secret["team_admin"],
        revoked=secret["revoked"],
        other_org_slug=other.slug,
        other_reservation=theirs.json()["reservation_id"],
    )


@pytest.fixture
def fuzzer(server, world, request) -> Iterator[Fuzzer]:
    # Generous timeouts for a loaded 2-core box, but a hang still fails.
    timeout = httpx.Timeout(15, connect=5)
    with httpx.Client(base_url=server.url, timeout=timeout) as client:
        yield Fuzzer(client, request.node.originalname)


def pytest_terminal_summary(terminalreporter) -> None:
    if not COUNTS:
        return
    terminalreporter.section("fuzz: requests per endpoint")
    width = max(len(name) for name in COUNTS)
    for name, count in sorted(COUNTS.items()):
        terminalreporter.write_line(f"{name:<{width}}  {count:>6}")
    terminalreporter.write_line(f"{'total':<{width}}  {sum(COUNTS.values()):>6}")
