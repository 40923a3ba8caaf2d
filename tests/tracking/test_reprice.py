"""manage.py reprice: unpriced (or all) events get the price in effect when
they started; budget windows and rollups follow in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError
from django.db import connection
from django.utils import timezone

from budgets.models import BudgetWindow
from tests.tracking.conftest import raw_sums, rollups, run
from tracking.models import HourlyRollup, Price, RequestEvent

# Passes take the events just made.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_lag")]

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def make_price(model: str = "new-model", effective_from: datetime = LONG_AGO, **prices) -> Price:
    fields = {"input_per_token": "0.000001", "output_per_token": "0.000002", **prices}
    return Price.objects.create(
        provider="acme-ai",
        model=model,
        effective_from=effective_from,
        **{
            k: None if v is None else Decimal(v) if isinstance(v, str) else v
            for k, v in fields.items()
        },
    )


@dataclass
class Tokens:
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


def midnight_days_ago(days: int) -> datetime:
    today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


# --- The cost formula (hand-computed) ----------------------------------------------

TIERED = {
    "input_per_token": "0.0000025",
    "output_per_token": "0.00001",
    "cache_read_per_token": "0.00000125",
    "tier_threshold_tokens": 200_000,
    "input_above_threshold_per_token": "0.000005",
    "output_above_threshold_per_token": "0.000015",
}


@pytest.mark.parametrize(
    ("prices", "tokens", "expected"),
    [
        pytest.param(
            TIERED,
            Tokens(1000, 2000, 300, 400, 500),
            # 1000 x 2.5e-6 + 2000 x 1.25e-6 + 300 x 2.5e-6 (cache write: input price)
            # + 400 x 1e-5 + 500 x 1e-5 (reasoning: output price)
            "0.01475",
            id="cache-write-and-reasoning-fall-back",
        ),
        pytest.param(
            {**TIERED, "cache_write_per_token": "0.000003", "reasoning_per_token": "0.00002"},
            Tokens(1000, 2000, 300, 400, 500),
            # 0.0025 + 0.0025 + 300 x 3e-6 + 0.004 + 500 x 2e-5
            "0.0199",
            id="own-cache-write-and-reasoning-prices",
        ),
        pytest.param(
            TIERED,
            Tokens(150_000, 60_000, 0, 1000, 0),
            # 210,000 input tokens in all, above 200k: 150,000 x 5e-6 + 60,000 x 1.25e-6
            # + 1000 x 1.5e-5
            "0.84",
            id="above-the-tier-threshold",
        ),
        pytest.param(
            TIERED,
            Tokens(200_000, 0, 0, 1000, 0),
            # Exactly at the threshold is not above it: 200,000 x 2.5e-6 + 1000 x 1e-5
            "0.51",
            id="at-the-tier-threshold",
        ),
        pytest.param(
            {"input_per_token": "0.00000000005", "output_per_token": "0"},
            Tokens(input_tokens=1),
            "0.0000000001",
            id="rounds-half-up-to-ten-places",
        ),
        pytest.param(
            {"input_per_token": "0.00000000004999", "output_per_token": "0"},
            Tokens(input_tokens=1),
            "0",
            id="rounds-down-below-half",
        ),
        pytest.param(
            {"input_per_token": "0.00001234567891", "output_per_token": "0.00009876543219"},
            Tokens(input_tokens=987_654_321, output_tokens=123_456_789),
            # 987654321 x 1234567891e-14 + 123456789 x 9876543219e-14
            # = 24386.52624351470802 exactly, rounded to ten places
            "24386.5262435147",
            id="big-counts-stay-exact",
        ),
    ],
)
def test_event_cost(prices, tokens, expected):
    """The SQL that prices events at ingest and in reprice (tollgate_event_cost)."""
    make_price(model="formula-model", **prices)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_event_cost(NULL, 'formula-model', 'acme-ai', now(), %s, %s, %s, %s, %s)",
            [
                tokens.input_tokens,
                tokens.cache_read_tokens,
                tokens.cache_write_tokens,
                tokens.output_tokens,
                tokens.reasoning_tokens,
            ],
        )
        assert cursor.fetchone()[0] == Decimal(expected)


# --- Repricing ------------------------------------------------------------------------


def test_unpriced_events_get_priced_and_windows_and_rollups_follow(org, make_event, make_budget):
    make_price()
    org_budget = make_budget(org, "100", period="day")
    team_budget = make_budget(org, "100", scope="team", team="search", period="month")
    user_budget = make_budget(org, "100", scope="user", user="alice", period="day")
    other_team = make_budget(org, "100", scope="team", team="support", period="day")
    started = midnight_days_ago(3) + timedelta(hours=10)
    day_end = started.replace(hour=0) + timedelta(days=1)
    # Ingest already counted other, priced spend in the org's day.
    BudgetWindow.objects.create(
        budget=org_budget,
        period_start=started.replace(hour=0),
        period_end=day_end,
        spent=Decimal("1"),
    )
    for minutes in (5, 10):
        make_event(
            org,
            model="new-model",
            started_at=started + timedelta(minutes=minutes),
            cost="0",
            priced=False,
            input_tokens=1000,
            output_tokens=500,
        )
    run("aggregate_usage")
    assert HourlyRollup.objects.get().unpriced_requests == 2

    output = run("reprice", "--since", f"{midnight_days_ago(4):%Y-%m-%d}")

    # 1000 x 0.000001 + 500 x 0.000002 = 0.002 each
    assert set(RequestEvent.objects.values_list("cost_usd", "priced")) == {(Decimal("0.002"), True)}
    spent = {w.budget_id: (w.period_start, w.spent) for w in BudgetWindow.objects.all()}
    month_start = started.replace(day=1, hour=0)
    assert spent == {
        org_budget.id: (started.replace(hour=0), Decimal("1.004")),
        team_budget.id: (month_start, Decimal("0.004")),
        user_budget.id: (started.replace(hour=0), Decimal("0.004")),
    }
    assert other_team.id not in spent
    rollup = HourlyRollup.objects.get()
    assert (rollup.cost_usd, rollup.unpriced_requests) == (Decimal("0.004"), 0)
    assert rollups() == raw_sums()
    assert "Repriced 2 events; total change +$0.004." in output
    assert "new-model: 2 events, +$0.004" in output
    assert "Budget windows adjusted: 3 (2 created)" in output


def test_each_event_gets_the_price_in_effect_when_it_started(org, make_event):
    first = midnight_days_ago(5) + timedelta(hours=9)
    second = midnight_days_ago(2) + timedelta(hours=9)
    make_price()
    make_price(
        effective_from=second - timedelta(hours=1),
        input_per_token="0.00001",
        output_per_token="0.00002",
    )
    early = make_event(org, model="new-model", started_at=first, cost="0", priced=False)
    late = make_event(org, model="new-model", started_at=second, cost="0", priced=False)

    run("reprice", "--since", f"{midnight_days_ago(10):%Y-%m-%d}")

    # 100 input + 50 output tokens
    early.refresh_from_db()
    late.refresh_from_db()
    assert early.cost_usd == Decimal("0.0002")
    assert late.cost_usd == Decimal("0.002")

    # A newer price changes no past cost, even when everything is repriced.
    make_price(effective_from=timezone.now(), input_per_token="1", output_per_token="1")
    output = run("reprice", "--since", f"{midnight_days_ago(10):%Y-%m-%d}", "--all")

    assert sorted(RequestEvent.objects.values_list("cost_usd", flat=True)) == [
        Decimal("0.0002"),
        Decimal("0.002"),
    ]
    assert "Repriced 0 events" in output and "Unchanged (already at that price): 2 events" in output


def test_the_events_provider_price_wins_over_another_providers(org, make_event):
    make_price(model="gpt-4o", input_per_token="0.001")
    Price.objects.create(
        provider="openai",
        model="gpt-4o",
        effective_from=LONG_AGO,
        input_per_token=Decimal("0.0000025"),
        output_per_token=Decimal("0.00001"),
    )
    event = make_event(org, model="gpt-4o", provider="openai", cost="0", priced=False)

    run("reprice", "--since", "2000-01-01")

    event.refresh_from_db()
    assert event.cost_usd == Decimal("0.00075")  # 100 x 2.5e-6 + 50 x 1e-5


def test_all_corrects_priced_events_and_takes_the_difference_off_the_windows(
    org, make_event, make_budget
):
    make_price()
    budget = make_budget(org, "100", period="total")
    event = make_event(org, model="new-model", cost="1", priced=True)
    BudgetWindow.objects.create(
        budget=budget,
        period_start=datetime(1970, 1, 1, tzinfo=UTC),
        period_end=datetime(9999, 12, 31, tzinfo=UTC),
        spent=Decimal("1.5"),
    )

    output = run("reprice", "--since", "2000-01-01", "--all")

    event.refresh_from_db()
    assert event.cost_usd == Decimal("0.0002")
    assert BudgetWindow.objects.get().spent == Decimal("0.5002")
    assert "total change -$0.9998" in output


def test_only_unpriced_events_without_all(org, make_event):
    make_price()
    priced = make_event(org, model="new-model", cost="1", priced=True)

    run("reprice", "--since", "2000-01-01")

    priced.refresh_from_db()
    assert priced.cost_usd == Decimal("1")


def test_window_periods_follow_the_orgs_time_zone(make_org, make_event, make_budget):
    berlin = ZoneInfo("Europe/Berlin")
    org = make_org("berlin", time_zone="Europe/Berlin")
    make_price()
    budget = make_budget(org, "100", period="day")
    local_day = (midnight_days_ago(3) + timedelta(hours=12)).astimezone(berlin).date()
    local_midnight = datetime.combine(local_day, datetime.min.time(), tzinfo=berlin)
    # 00:30 in Berlin is still the day before in UTC.
    make_event(
        org,
        model="new-model",
        started_at=local_midnight + timedelta(minutes=30),
        cost="0",
        priced=False,
    )

    run("reprice", "--since", "2000-01-01")

    window = BudgetWindow.objects.get(budget=budget)
    assert window.period_start == local_midnight
    assert window.period_end == local_midnight + timedelta(days=1)
    assert window.spent == Decimal("0.0002")


def test_models_without_a_price_stay_unpriced_and_are_named(org, make_event):
    make_event(org, model="mystery-model", cost="0", priced=False)

    output = run("reprice", "--since", "2000-01-01")

    assert RequestEvent.objects.get().priced is False
    assert "Repriced 0 events" in output
    assert "mystery-model: 1 events still have no price" in output


def test_model_and_range_filters(org, make_event):
    make_price("model-a")
    make_price("model-b")
    since = midnight_days_ago(3)
    a = make_event(
        org, model="model-a", started_at=since + timedelta(hours=1), cost="0", priced=False
    )
    b = make_event(
        org, model="model-b", started_at=since + timedelta(hours=1), cost="0", priced=False
    )
    old_a = make_event(
        org, model="model-a", started_at=since - timedelta(hours=1), cost="0", priced=False
    )
    late_a = make_event(
        org, model="model-a", started_at=since + timedelta(days=2), cost="0", priced=False
    )

    run(
        "reprice",
        "--since",
        since.isoformat(),
        "--until",
        (since + timedelta(days=1)).isoformat(),
        "--model",
        "model-a",
    )

    priced = {e.pk: e.priced for e in RequestEvent.objects.all()}
    assert priced == {a.pk: True, b.pk: False, old_a.pk: False, late_a.pk: False}


def test_batches_cover_every_event(org, make_event):
    make_price()
    for minutes in range(7):
        make_event(
            org,
            model="new-model",
            started_at=midnight_days_ago(1) + timedelta(minutes=minutes),
            cost="0",
            priced=False,
        )
    make_event(org, model="unknown", started_at=midnight_days_ago(1), cost="0", priced=False)
    run("aggregate_usage")

    output = run("reprice", "--since", "2000-01-01", "--batch-size", "2")

    assert RequestEvent.objects.filter(priced=False).count() == 1
    assert "Repriced 7 events" in output
    assert rollups() == raw_sums()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--since", "last week"],
        ["--since", "2026-11-02", "--until", "2026-11-01"],
        ["--since", "2026-11-01", "--batch-size", "0"],
    ],
)
def test_bad_arguments_are_refused(args):
    with pytest.raises(CommandError):
        run("reprice", *args)


def test_repricing_judges_alert_thresholds_again(org, make_event, make_budget):
    """A reprice that moves a window over a threshold fires it; one that
    moves it back below re-arms it (the window's flag turns false)."""
    from budgets.models import Alert

    make_price()
    budget = make_budget(org, "0.005", period="total", soft_limit_pct=80)
    started = timezone.now() - timedelta(minutes=5)
    for minutes in (1, 2):
        make_event(
            org,
            model="new-model",
            started_at=started + timedelta(minutes=minutes),
            cost="0",
            priced=False,
            input_tokens=1000,
            output_tokens=500,
        )

    run("reprice", "--since", f"{midnight_days_ago(1):%Y-%m-%d}")

    alert = Alert.objects.get()  # 0.004 of 0.005: 80%
    assert (alert.kind, alert.used_usd, alert.budget_id) == ("soft", Decimal("0.004"), budget.id)
    assert BudgetWindow.objects.get(budget=budget).soft_alerted

    Price.objects.update(
        input_per_token=Decimal("0.0000001"), output_per_token=Decimal("0.0000002")
    )
    run("reprice", "--since", f"{midnight_days_ago(1):%Y-%m-%d}", "--all")

    window = BudgetWindow.objects.get(budget=budget)
    assert window.spent == Decimal("0.0004") and not window.soft_alerted
    assert Alert.objects.count() == 1
