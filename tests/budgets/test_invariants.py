"""Property test: random interleavings of hold, release, settle and expiry
across tiers and periods keep the budget windows' invariants.

Drives the same SQL functions as the hot path (tollgate_decide,
tollgate_decide_many, tollgate_release, tollgate_record_events, tollgate_expire_reservations) with
hypothesis' rule-based state machine, and after every step checks:
- holds never take an enforced window's spent + active holds over its limit
  (an event may: real cost always counts);
- each window's `reserved` equals the sum of the active holds added to it;
- each window's `spent` equals the sum of the costs of the events in it;
- nothing is negative.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from budgets.models import Budget, BudgetWindow, EndUser, Organization, Reservation, Team
from tracking.models import RequestEvent

TEAMS = ["alpha", "beta"]
USERS = ["ann", "bob", "cyd"]
CENTS = st.integers(min_value=1, max_value=150).map(lambda c: Decimal(c) / 100)


def _call(sql: str, params: list) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        value = cursor.fetchone()[0]
    return json.loads(value) if isinstance(value, str) else value


class BudgetMachine(RuleBasedStateMachine):
    holds = Bundle("holds")

    @initialize()
    def setup(self) -> None:
        self.savepoint = transaction.savepoint()
        self.org = Organization.objects.create(
            slug=f"inv-{uuid.uuid4().hex[:8]}", time_zone="Europe/Berlin"
        )
        teams = {t: Team.objects.create(org=self.org, slug=t) for t in TEAMS}
        users = {u: EndUser.objects.create(org=self.org, external_id=u) for u in USERS}
        money = Decimal
        Budget.objects.create(org=self.org, scope="org", period="month", limit_usd=money("5"))
        Budget.objects.create(
            org=self.org, scope="team", team=teams["alpha"], period="day", limit_usd=money("2")
        )
        Budget.objects.create(
            org=self.org,
            scope="team",
            team=teams["beta"],
            period="week",
            limit_usd=money("1.5"),
            enforce=False,
        )
        Budget.objects.create(
            org=self.org, scope="user", user=users["ann"], period="total", limit_usd=money("1")
        )
        self.events = 0

    def teardown(self) -> None:
        transaction.savepoint_rollback(self.savepoint)

    @rule(
        target=holds,
        team=st.sampled_from([*TEAMS, None]),
        user=st.sampled_from([*USERS, None]),
        amount=CENTS,
    )
    def hold(self, team, user, amount):
        result = _call(
            "SELECT tollgate_decide(%s, false, %s, %s, %s, NULL, NULL, NULL, true, 300, NULL)",
            [self.org.id, team, user, amount],
        )
        assert result["status"] in ("held", "denied")
        return result.get("reservation_id") or "denied"

    @rule(
        target=holds,
        items=st.lists(
            st.tuples(st.sampled_from([*TEAMS, None]), st.sampled_from([*USERS, None]), CENTS),
            min_size=2,
            max_size=5,
        ),
    )
    def hold_batch(self, items):
        """Several holds decided together, as the server batches concurrent ones."""
        batch = [
            {
                "org_id": self.org.id,
                "strict": False,
                "team": team,
                "user": user,
                "amount": str(amount),
                "model": None,
                "input_tokens": None,
                "max_output_tokens": None,
                "ttl_seconds": 300,
            }
            for team, user, amount in items
        ]
        results = _call("SELECT tollgate_decide_many(%s::jsonb)", [json.dumps(batch)])
        assert [r["status"] in ("held", "denied") for r in results] == [True] * len(items)
        # The bundle takes one of them to release, settle or expire later; the
        # others stay active, and the invariants count them like any hold.
        return next((r["reservation_id"] for r in results if r["status"] == "held"), "denied")

    @rule(hold=holds)
    def release(self, hold):
        if hold != "denied":
            assert (
                _call("SELECT tollgate_release(%s, %s)", [self.org.id, hold])["status"]
                != "not_found"
            )

    @rule(hold=holds, cost=CENTS)
    def settle(self, hold, cost):
        self.events += 1
        reservation = None if hold == "denied" else hold
        team = None
        if reservation is not None:
            team_id = Reservation.objects.get(pk=reservation).team_id
            team = Team.objects.get(pk=team_id).slug if team_id else None
        event = {
            "idx": 0,
            "event_id": f"e{self.events}",
            "team": team,
            "user": None,
            "model": "m",
            "provider": None,
            "input_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": str(cost),
            "latency_ms": None,
            "status": "ok",
            "started_at": None,
            "reservation_id": reservation,
            "tags": {},
            "payload_hash": f"h{self.events}",
        }
        result = _call(
            "SELECT tollgate_record_events(%s, false, %s::jsonb)",
            [self.org.id, json.dumps([event])],
        )
        assert result["status"] == "ok"

    @rule(hold=holds)
    def expire(self, hold):
        if hold != "denied":
            Reservation.objects.filter(pk=hold, status="active").update(
                expires_at="2000-01-01T00:00:00Z"
            )
            with connection.cursor() as cursor:
                cursor.execute("SELECT tollgate_expire_reservations(1000)")

    @invariant()
    def windows_match_holds_and_events(self):
        if not hasattr(self, "org"):
            return
        active = Reservation.objects.filter(org=self.org, status="active")
        for window in BudgetWindow.objects.filter(budget__org=self.org).select_related("budget"):
            held = sum((r.amount for r in active if window.id in r.window_ids), Decimal(0))
            assert window.reserved == held >= 0
            assert window.spent >= 0
            events = RequestEvent.objects.filter(
                org=self.org, started_at__gte=window.period_start, started_at__lt=window.period_end
            )
            budget = window.budget
            if budget.scope == "team":
                events = events.filter(team=budget.team)
            elif budget.scope == "user":
                events = events.filter(user=budget.user)
            assert window.spent == (events.aggregate(s=Sum("cost_usd"))["s"] or 0)
            if budget.enforce:
                # Holds alone never pass the limit (events may: real cost counts).
                assert window.reserved <= budget.limit_usd
                if window.spent == 0:
                    assert window.spent + window.reserved <= budget.limit_usd


@pytest.mark.django_db
def test_budget_invariants_hold_under_random_interleavings():
    machine = BudgetMachine.TestCase
    machine.settings = settings(
        max_examples=40,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    machine().runTest()
