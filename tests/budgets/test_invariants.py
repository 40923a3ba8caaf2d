"""Property test: random interleavings of hold, release, extension, partial
and final settlement and expiry across tiers (org, team, user, API key and
tag, some budgets model-filtered) and periods keep the budget windows' and
the holds' invariants.

Drives the same SQL functions as the hot path (tollgate_decide,
tollgate_decide_many, tollgate_release, tollgate_extend,
tollgate_record_events, tollgate_expire_reservations) with hypothesis'
rule-based state machine, and after every step checks:
- holds never take an enforced window's spent + active holds over its limit
  (an event may: real cost always counts);
- each window's `reserved` equals the sum of what the active holds added to
  it still hold (their amount less what was settled into them, not below 0);
- each window's `spent` equals the sum of the costs of the events in it;
- each hold's `settled` equals the costs of the events that settled into it
  while it was active, and a hold closes only once (active → settled,
  released or expired, never back), its expiry never moving earlier;
- nothing is negative.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from budgets.models import (
    ApiKey,
    Budget,
    BudgetWindow,
    EndUser,
    Organization,
    Reservation,
    Team,
)
from tracking.models import RequestEvent

TEAMS = ["alpha", "beta"]
USERS = ["ann", "bob", "cyd"]
KEYS = ["app", "other"]
TAGS = [None, {"customer": "acme"}, {"customer": "acme", "feature": "sum"}, {"feature": "sum"}]
MODELS = [None, "claude-opus-4", "Claude-Opus-4-1", "gpt-4o", "gpt-4o-mini"]
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
        self.keys = {}
        for name in KEYS:
            key, _ = ApiKey.generate(org=self.org, name=name)
            key.save()
            self.keys[name] = key.id
        Budget.objects.create(
            org=self.org,
            scope="key",
            key_id=self.keys["app"],
            period="day",
            limit_usd=money("1.2"),
        )
        Budget.objects.create(
            org=self.org, scope="tag", tag="customer=acme", period="day", limit_usd=money("1.1")
        )
        Budget.objects.create(
            org=self.org, scope="tag", tag="feature=sum", period="week", limit_usd=money("0.9")
        )
        Budget.objects.create(
            org=self.org,
            scope="team",
            team=teams["alpha"],
            model_filter="claude-opus-*",
            period="day",
            limit_usd=money("0.8"),
        )
        Budget.objects.create(
            org=self.org, scope="org", model_filter="gpt-4o", period="day", limit_usd=money("1.3")
        )
        Budget.objects.create(
            org=self.org,
            scope="tag",
            tag="customer=acme",
            model_filter="gpt-*",
            period="day",
            limit_usd=money("0.7"),
        )
        self.events = 0
        # The model: what each hold has settled, how it closed, its expiry.
        self.settled: dict[str, Decimal] = {}
        self.closed: dict[str, str] = {}
        self.expires: dict[str, str] = {}

    def teardown(self) -> None:
        transaction.savepoint_rollback(self.savepoint)

    @rule(
        target=holds,
        team=st.sampled_from([*TEAMS, None]),
        user=st.sampled_from([*USERS, None]),
        amount=CENTS,
        key=st.sampled_from([*KEYS, None]),
        tags=st.sampled_from(TAGS),
        model=st.sampled_from(MODELS),
    )
    def hold(self, team, user, amount, key, tags, model):
        result = _call(
            "SELECT tollgate_decide(%s, false, %s, %s, %s, %s, NULL, NULL, true, 300, NULL, %s,"
            " '', %s::jsonb)",
            [
                self.org.id,
                team,
                user,
                amount,
                model,
                self.keys.get(key),
                None if tags is None else json.dumps(tags),
            ],
        )
        assert result["status"] in ("held", "denied")
        return self._taken(result)

    def _taken(self, result: dict) -> str:
        if result["status"] != "held":
            return "denied"
        hold = result["reservation_id"]
        self.settled[hold] = Decimal(0)
        self.expires[hold] = result["expires_at"]
        return hold

    @rule(
        target=holds,
        items=st.lists(
            st.tuples(
                st.sampled_from([*TEAMS, None]),
                st.sampled_from([*USERS, None]),
                CENTS,
                st.sampled_from([*KEYS, None]),
                st.sampled_from(TAGS),
                st.sampled_from(MODELS),
            ),
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
                "model": model,
                "input_tokens": None,
                "max_output_tokens": None,
                "ttl_seconds": 300,
                "key_id": self.keys.get(key),
                "tags": tags,
            }
            for team, user, amount, key, tags, model in items
        ]
        results = _call("SELECT tollgate_decide_many(%s::jsonb)", [json.dumps(batch)])
        assert [r["status"] in ("held", "denied") for r in results] == [True] * len(items)
        held = [self._taken(r) for r in results]
        # The bundle takes one of them to release, settle or expire later; the
        # others stay active, and the invariants count them like any hold.
        return next((h for h in held if h != "denied"), "denied")

    def _close(self, hold: str, status: str) -> None:
        """The model's hold closes; the database's must have closed the same way."""
        assert hold not in self.closed
        self.closed[hold] = status

    @rule(hold=holds)
    def release(self, hold):
        if hold == "denied":
            return
        result = _call("SELECT tollgate_release(%s, %s)", [self.org.id, hold])
        if hold in self.closed:
            assert result == {"status": self.closed[hold], "released_now": False}
        elif self._overdue(hold):
            # The sweeper has not reached it: a release still takes it back.
            assert result["status"] == "released"
            self._close(hold, "released")
        else:
            assert result == {"status": "released", "released_now": True}
            self._close(hold, "released")

    def _overdue(self, hold: str) -> bool:
        return Reservation.objects.filter(pk=hold, expires_at__lte="2001-01-01T00:00:00Z").exists()

    @rule(hold=holds, ttl=st.integers(min_value=1, max_value=3600))
    def extend(self, hold, ttl):
        if hold == "denied":
            return
        overdue = self._overdue(hold)
        result = _call("SELECT tollgate_extend(%s, %s, %s)", [self.org.id, hold, ttl])
        if hold in self.closed:
            assert result == {"status": self.closed[hold]}
        elif overdue:
            # Its time was up: expired now, as the sweeper would have.
            assert result == {"status": "expired"}
            self._close(hold, "expired")
        else:
            assert result["status"] == "active"
            assert result["expires_at"] >= self.expires[hold]  # never earlier (ISO, UTC)
            assert Decimal(result["settled_usd"]) == self.settled[hold]
            self.expires[hold] = result["expires_at"]

    @rule(
        hold=holds,
        costs=st.lists(
            st.tuples(
                CENTS,
                st.booleans(),
                st.sampled_from([*KEYS, None]),
                st.sampled_from(TAGS),
                st.sampled_from([m for m in MODELS if m is not None]),
            ),
            min_size=1,
            max_size=3,
        ),
    )
    def settle(self, hold, costs):
        """Events naming the hold in one call, each final or partial ("final": false),
        each recorded with a key, tags and a model (key, tag and model-filtered
        budgets count the events of theirs, whatever the hold was taken on)."""
        reservation = None if hold == "denied" else hold
        team = None
        if reservation is not None:
            team_id = Reservation.objects.get(pk=reservation).team_id
            team = Team.objects.get(pk=team_id).slug if team_id else None
        events = []
        for idx, (cost, final, key, tags, model) in enumerate(costs):
            self.events += 1
            events.append(
                {
                    "idx": idx,
                    "event_id": f"e{self.events}",
                    "team": team,
                    "user": None,
                    "model": model,
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
                    "final": final,
                    "tags": tags or {},
                    "payload_hash": f"h{self.events}",
                    "key_id": self.keys.get(key),
                }
            )
        result = _call(
            "SELECT tollgate_record_events(%s, false, %s::jsonb)",
            [self.org.id, json.dumps(events)],
        )
        assert result["status"] == "ok"
        if reservation is None:
            return
        answers = [r["reservation"] for r in result["results"]]
        if hold in self.closed:
            assert [a["settled"] for a in answers] == [False] * len(costs)
            assert {a["status"] for a in answers} == {self.closed[hold]}
            return
        self.settled[hold] += sum(cost for cost, *_ in costs)
        status = "settled" if any(final for _, final, *_ in costs) else "active"
        if status == "settled":
            self._close(hold, "settled")
        for answer in answers:
            assert answer["settled"] is True
            assert answer["status"] == status
            assert Decimal(answer["settled_usd"]) == self.settled[hold]
            over = self.settled[hold] - Decimal(answer["held_usd"])
            assert answer["over_hold_usd"] == (str(over.normalize()) if over > 0 else None)

    @rule(hold=holds)
    def overdue(self, hold):
        """Its time is up, and no sweeper has seen it yet."""
        if hold != "denied":
            Reservation.objects.filter(pk=hold, status="active").update(
                expires_at="2000-01-01T00:00:00Z"
            )

    @rule()
    def sweep(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT tollgate_expire_reservations(1000)")
            swept = cursor.fetchone()[0]
        overdue = [h for h in self.settled if h not in self.closed and self._overdue(h)]
        assert swept == len(overdue)
        for hold in overdue:
            self._close(hold, "expired")

    @invariant()
    def holds_match_the_model(self):
        if not hasattr(self, "org"):
            return
        holds = {str(r.pk): r for r in Reservation.objects.filter(org=self.org)}
        assert set(holds) == set(self.settled)
        for hold, reservation in holds.items():
            assert reservation.settled == self.settled[hold]
            assert reservation.status == self.closed.get(hold, "active")

    @invariant()
    def windows_match_holds_and_events(self):
        if not hasattr(self, "org"):
            return
        active = Reservation.objects.filter(org=self.org, status="active")
        for window in BudgetWindow.objects.filter(budget__org=self.org).select_related("budget"):
            held = sum(
                (max(r.amount - r.settled, 0) for r in active if window.id in r.window_ids),
                Decimal(0),
            )
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
            elif budget.scope == "key":
                events = events.filter(key=budget.key)
            elif budget.scope == "tag":
                name, value = budget.tag.split("=", 1)
                events = events.filter(tags__contains={name: value})
            spent = sum(
                (e.cost_usd for e in events if _matches(e.model, budget.model_filter)), Decimal(0)
            )
            assert window.spent == spent
            if budget.enforce:
                # Holds alone never pass the limit (events may: real cost counts).
                assert window.reserved <= budget.limit_usd
                if window.spent == 0:
                    assert window.spent + window.reserved <= budget.limit_usd


def _matches(model: str, model_filter: str) -> bool:
    """A model filter's rule, written again here as the specification."""
    if not model_filter:
        return True
    if model_filter.endswith("*"):
        return model.lower().startswith(model_filter[:-1])
    return model.lower() == model_filter


@pytest.mark.django_db
def test_budget_invariants_hold_under_random_interleavings():
    machine = BudgetMachine.TestCase
    machine.settings = settings(
        max_examples=60,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    machine().runTest()
