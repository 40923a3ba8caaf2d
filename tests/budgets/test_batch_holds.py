"""Batched holds (tollgate_decide_many): the items of one batch are decided in
order, each seeing the holds of the items before it, and every item gets the
answer a single hold (tollgate_decide) would have given in its place.

The server sends a batch only when holds arrive while earlier ones are in
flight, which a test cannot time; these tests call the SQL function directly,
as the server does (budgets/api.py, DecisionBatcher)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgets.models import (
    Alert,
    ApiKey,
    Budget,
    BudgetWindow,
    Organization,
    Reservation,
    Team,
)
from budgets.services import api_key_create
from tracking.models import Price


def _item(org: Organization, amount: str | None, *, team=None, user=None, **extra) -> dict:
    return {
        "org_id": org.id,
        "strict": org.strict,
        "team": team,
        "user": user,
        "amount": amount,
        "model": None,
        "input_tokens": None,
        "max_output_tokens": None,
        "ttl_seconds": 300,
        **extra,
    }


def decide_many(items: list[dict]) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tollgate_decide_many(%s::jsonb)", [json.dumps(items)])
        value = cursor.fetchone()[0]
    return json.loads(value) if isinstance(value, str) else value


def decide_one(item: dict) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_decide(%s, %s, %s, %s, %s, %s, %s, %s, true, %s, NULL, %s, '',"
            " %s::jsonb)",
            [
                item["org_id"],
                item["strict"],
                item["team"],
                item["user"],
                item["amount"],
                item["model"],
                item["input_tokens"],
                item["max_output_tokens"],
                item["ttl_seconds"],
                item.get("key_id"),
                None if item.get("tags") is None else json.dumps(item["tags"]),
            ],
        )
        value = cursor.fetchone()[0]
    return json.loads(value) if isinstance(value, str) else value


def _statuses(results: list[dict]) -> list[str]:
    return [r["status"] for r in results]


def test_denied_middle_item_changes_nothing_and_a_later_smaller_one_fits(make_org, make_budget):
    org = make_org()
    budget = make_budget(org, "1.00")

    results = decide_many([_item(org, a) for a in ("0.60", "0.50", "0.30", "0.20")])

    assert _statuses(results) == ["held", "denied", "held", "denied"]
    blocked = results[1]["blocked"]
    # The denied item saw the first hold, and only it.
    assert (blocked["scope"], blocked["reserved_usd"], blocked["limit_usd"]) == ("org", "0.6", "1")
    assert results[2]["budgets"][0]["reserved_usd"] == "0.9"
    assert results[3]["blocked"]["reserved_usd"] == "0.9"
    window = BudgetWindow.objects.get(budget=budget)
    assert window.reserved == Decimal("0.90")
    assert sorted(Reservation.objects.values_list("amount", flat=True)) == [
        Decimal("0.30"),
        Decimal("0.60"),
    ]


def test_items_of_different_orgs_in_one_batch_count_against_their_own_org(make_org, make_budget):
    acme, globex = make_org(), make_org()
    acme_budget = make_budget(acme, "1.00")
    globex_budget = make_budget(globex, "0.50", scope="team", team="ops")

    results = decide_many(
        [
            _item(acme, "0.40", team="ops"),
            _item(globex, "0.40", team="ops"),
            _item(acme, "0.40", team="ops"),
            _item(globex, "0.20", team="ops"),  # globex's team budget is full
            _item(acme, "0.30", team="ops"),  # acme's org budget is full
            _item(globex, "0.10", team="ops"),
        ]
    )

    assert _statuses(results) == ["held", "held", "held", "denied", "denied", "held"]
    assert results[3]["blocked"]["scope"] == "team"
    assert results[4]["blocked"]["scope"] == "org"
    assert BudgetWindow.objects.get(budget=acme_budget).reserved == Decimal("0.80")
    assert BudgetWindow.objects.get(budget=globex_budget).reserved == Decimal("0.50")
    # Each org registered its own team "ops"; the reservations point at them.
    held = Reservation.objects.order_by("amount")
    assert {(r.org_id, r.team.org_id) for r in held} == {(acme.id, acme.id), (globex.id, globex.id)}
    assert Team.objects.filter(slug="ops").count() == 2


def test_every_item_gets_the_answer_a_single_hold_would_give(make_org, make_budget):
    """The same sequence once through tollgate_decide (one by one) and once
    as one batch, in one transaction (so now() and the expiries are equal):
    the answers, the windows and the reservations are the same."""
    org = make_org(time_zone="Europe/Berlin")
    strict = make_org(strict=True)
    make_budget(org, "3.00")
    make_budget(org, "5.00", period="month", soft_limit_pct=50)
    make_budget(org, "1.00", scope="team", team="search")
    make_budget(org, "0.50", scope="team", team="ads", period="week", enforce=False)
    make_budget(org, "0.40", scope="user", user="alice", soft_limit_pct=90)
    make_budget(org, "0", scope="user", user="mallory", period="total")
    make_budget(strict, "1.00", scope="team", team="known")
    items = [
        _item(org, "0.25", team="search", user="alice"),
        _item(org, "0.20", team="search", user="alice"),
        _item(org, "0", team="ads", user="mallory"),
        _item(org, "0.01", team="ads", user="mallory"),
        _item(strict, "0.10", team="unknown"),
        _item(strict, "0.30", team="known", user="nobody"),
        _item(strict, "0.30", team="known"),
        _item(org, "0.70", team="ads", user="bob", ttl_seconds=60),
        _item(org, "0.60", team="search", user="carol"),
        _item(org, "0.10", team="search", user="alice"),
        _item(org, None, team="new-team", user="new-user", model="gpt-x", input_tokens=10),
        _item(org, "2.00", team="ads"),
        _item(org, "0.05"),
    ]

    def snapshot() -> tuple:
        windows = sorted(
            (w.budget_id, w.period_start, w.spent, w.reserved) for w in BudgetWindow.objects.all()
        )
        holds = sorted(
            (r.org_id, r.team.slug if r.team else "", r.amount, r.expires_at, r.model)
            for r in Reservation.objects.select_related("team")
        )
        alerts = sorted((a.budget_id, a.kind) for a in Alert.objects.all())
        return windows, holds, alerts

    def without_ids(results: list[dict]) -> list[dict]:
        return [{**r, "reservation_id": "…"} if "reservation_id" in r else r for r in results]

    with transaction.atomic():
        savepoint = transaction.savepoint()
        one_by_one = [decide_one(item) for item in items]
        expected = snapshot()
        transaction.savepoint_rollback(savepoint)
        batched = decide_many(items)
        assert without_ids(batched) == without_ids(one_by_one)
        assert snapshot() == expected
    assert set(_statuses(batched)) == {"held", "denied", "not_found", "unpriced"}


def test_alerts_of_a_batch_are_raised_once_per_window_and_kind(make_org, make_budget):
    org = make_org(alerts_count_holds=True)  # holds count: a batch of holds can cross
    budget = make_budget(org, "1.00", soft_limit_pct=50)

    decide_many([_item(org, "0.30"), _item(org, "0.30"), _item(org, "0.40"), _item(org, "0.01")])

    window = BudgetWindow.objects.get(budget=budget)
    assert window.reserved == Decimal("1.00")
    assert sorted(Alert.objects.filter(window=window).values_list("kind", flat=True)) == [
        "hard",
        "soft",
    ]


ITEM = st.fixed_dictionaries(
    {
        "strict": st.booleans(),
        "team": st.sampled_from([None, "search", "ads", "known", "new-team"]),
        "user": st.sampled_from([None, "alice", "mallory", "bob", "new-user"]),
        "cents": st.one_of(st.none(), st.integers(min_value=0, max_value=250)),
        "model": st.sampled_from(["gpt-4o", "unpriced-1"]),
        # Amounts name their model too (allow-lists judge it), or none.
        "named": st.booleans(),
        "key": st.sampled_from([None, "open", "capped", "gpt-only"]),
        "tags": st.sampled_from(
            [None, {"customer": "acme"}, {"customer": "beta", "feature": "sum"}, {"feature": "sum"}]
        ),
        "ttl_seconds": st.sampled_from([60, 300]),
    }
)


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=st.lists(ITEM, min_size=1, max_size=10))
def test_single_and_batched_holds_agree_for_any_sequence(make_org, make_budget, specs):
    """Holds are decided by two functions, tollgate_decide (one hold, the
    cheaper path when holds arrive one at a time) and tollgate_decide_many (a
    batch): for any sequence of holds, one by one and as one batch give the
    same answers, windows, holds and alerts."""
    # One org judges alerts on spend plus holds (holds raise them), the other
    # on settled spend (holds never do): both paths must agree on either.
    org = Organization.objects.filter(slug="agree").first() or make_org(
        "agree", alerts_count_holds=True
    )
    strict = Organization.objects.filter(slug="agree-strict").first() or make_org(
        "agree-strict", strict=True
    )
    if not Budget.objects.filter(org=org).exists():
        Price.objects.create(
            provider="openai",
            model="gpt-4o",
            input_per_token=Decimal("0.0000025"),
            output_per_token=Decimal("0.00001"),
        )
        make_budget(org, "3.00", soft_limit_pct=60)
        make_budget(org, "5.00", period="month", soft_limit_pct=50)
        make_budget(org, "1.00", scope="team", team="search")
        make_budget(org, "0.50", scope="team", team="ads", period="week", enforce=False)
        make_budget(org, "0.40", scope="user", user="alice", soft_limit_pct=90)
        make_budget(org, "0", scope="user", user="mallory", period="total")
        make_budget(strict, "1.00", scope="team", team="known")
        make_budget(strict, "0.75")
        Organization.objects.filter(pk=org.pk).update(max_request_usd=Decimal("2"))
        Team.objects.filter(org=org, slug="ads").update(
            max_request_usd=Decimal("0.3"), allowed_models=["gpt-*", "claude-opus-*"]
        )
        for name in ("open", "capped", "gpt-only"):
            api_key_create(org=org, team_slug=None, is_admin=False, name=name)
        ApiKey.objects.filter(org=org, name="gpt-only").update(allowed_models=["gpt-4o"])
        make_budget(org, "0.60", scope="key", key=ApiKey.objects.get(org=org, name="capped"))
        make_budget(
            org,
            "0.90",
            scope="key",
            key=ApiKey.objects.get(org=org, name="capped"),
            period="week",
            soft_limit_pct=50,
        )
        for tag, limit, period, soft in [
            ("customer=acme", "0.80", "day", 80),
            ("customer=beta", "0", "total", 80),
            ("feature=sum", "0.50", "day", 50),
            ("feature=sum", "1.20", "week", 80),
        ]:
            Budget.objects.create(
                org=org,
                scope="tag",
                tag=tag,
                period=period,
                limit_usd=Decimal(limit),
                soft_limit_pct=soft,
            )
        # Model-filtered budgets, of a scope that has unfiltered ones too.
        Budget.objects.create(
            org=org,
            scope="team",
            team=Team.objects.get(org=org, slug="search"),
            model_filter="gpt-*",
            period="day",
            limit_usd=Decimal("0.70"),
        )
        Budget.objects.create(
            org=org, scope="org", model_filter="unpriced-1", period="day", limit_usd=Decimal("0.9")
        )
        Budget.objects.create(
            org=org,
            scope="tag",
            tag="feature=sum",
            model_filter="gpt-4o",
            period="day",
            limit_usd=Decimal("0.35"),
        )
    keys = dict(ApiKey.objects.filter(org=org).values_list("name", "id"))
    items = []
    for spec in specs:
        target = strict if spec["strict"] else org
        if spec["cents"] is None:
            extra = {"model": spec["model"], "input_tokens": 1000, "max_output_tokens": 500}
            amount = None
        else:
            extra = {"model": spec["model"]} if spec["named"] else {}
            amount = str(Decimal(spec["cents"]) / 100)
        if spec["key"] is not None and not spec["strict"]:
            extra["key_id"] = keys[spec["key"]]
        if spec["tags"] is not None:
            extra["tags"] = spec["tags"]
        items.append(
            _item(
                target,
                amount,
                team=spec["team"],
                user=spec["user"],
                ttl_seconds=spec["ttl_seconds"],
                **extra,
            )
        )

    with transaction.atomic():
        savepoint = transaction.savepoint()
        one_by_one = [decide_one(item) for item in items]
        expected = _state()
        transaction.savepoint_rollback(savepoint)
        batched = decide_many(items)
        assert _without_ids(batched) == _without_ids(one_by_one)
        assert _state() == expected
        transaction.set_rollback(True)


def _state() -> tuple:
    # An empty window is the same as none (a batch creates the windows of all
    # its items before it prices them; a single hold that cannot be priced
    # stops before).
    windows = sorted(
        (w.budget_id, w.period_start, w.spent, w.reserved, w.soft_alerted, w.hard_alerted)
        for w in BudgetWindow.objects.all()
        if w.spent or w.reserved
    )
    holds = sorted(
        (
            r.org_id,
            r.team.slug if r.team else "",
            r.user_id is not None,
            r.key_id or 0,
            r.amount,
            r.expires_at,
            r.model,
            sorted((r.tags or {}).items()),
        )
        for r in Reservation.objects.select_related("team")
    )
    # Which alerts, not their amounts: a single hold raises its alerts with
    # the spend as it stood after that hold, a batch with the spend after
    # the whole batch.
    alerts = sorted((a.budget_id, a.kind) for a in Alert.objects.all())
    teams = sorted(Team.objects.values_list("org_id", "slug"))
    return windows, holds, alerts, teams


def _without_ids(results: list[dict]) -> list[dict]:
    """Answers without their reservation ids, and a held item's budgets in
    one order: a hold lists them in window id order, and window ids follow
    the order windows were first used in, which differs between holds made
    one by one (each creates its own) and a batch (all at once, by budget)."""

    def listed(rows: list[dict]) -> list[dict]:
        return sorted(rows, key=lambda b: (b["scope"], b["id"], b.get("model") or "", b["period"]))

    normalized = []
    for r in results:
        if "reservation_id" in r:
            r = {**r, "reservation_id": "…"}
        if r.get("status") == "held":
            r = {**r, "budgets": listed(r["budgets"]), "warnings": listed(r["warnings"])}
        normalized.append(r)
    return normalized


def test_a_batch_reads_each_items_budgets_through_indexes(make_org, make_budget):
    """With 20,000 user budgets in one org, the generic plan of a batch's
    budget lookup, planned as tollgate_decide_many plans it, reads each
    item's budgets by index: not the org's budgets once per item, which is
    what one condition with ORs across the subjects did."""
    from budgets.models import EndUser

    org = make_org("big")
    make_budget(org, "100")
    users = EndUser.objects.bulk_create(EndUser(org=org, external_id=f"u{i}") for i in range(20000))
    Budget.objects.bulk_create(
        Budget(org=org, scope="user", user=user, period="day", limit_usd=10) for user in users
    )
    items = [_item(org, "0.1", user=f"u{i}") for i in (7, 70, 700, 7000, 17000)]
    decide_many(items)  # the windows exist, as in a running deployment
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE budgets_budget")
        cursor.execute("ANALYZE budgets_enduser")
        cursor.execute("ANALYZE budgets_budgetwindow")
        cursor.execute("SELECT proconfig FROM pg_proc WHERE proname = 'tollgate_decide_many'")
        settings_of_the_function = cursor.fetchone()[0]
        for setting in settings_of_the_function:
            name, value = setting.split("=")
            cursor.execute(f"SET LOCAL {name} = {value}")
        cursor.execute(
            "PREPARE lookup(jsonb) AS SELECT a.idx, a.subject FROM tollgate_batch_applicable($1) a"
        )
        try:
            cursor.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE lookup(%s)", [json.dumps(items)]
            )
            plan = cursor.fetchone()[0][0]["Plan"]
            cursor.execute("EXECUTE lookup(%s)", [json.dumps(items)])
            rows = sorted(cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE lookup")

    assert rows == sorted(
        [(n, org.slug) for n in range(1, 6)]
        + [(n, f"u{i}") for n, i in enumerate((7, 70, 700, 7000, 17000), start=1)]
    )
    # A few pages per item, not the 20,000 budgets' (~250 pages) per item.
    assert plan["Shared Hit Blocks"] + plan.get("Shared Read Blocks", 0) < 200
