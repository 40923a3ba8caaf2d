"""Usage of a model with no price, by the org's unpriced_policy, through the
real server and database: "fallback" (the default) charges the hold an event
settles or a conservative per-token rate, "deny" refuses checks and holds
(422 unpriced_model), "zero" keeps the old free-until-repriced behaviour;
reprice replaces a fallback cost with the real price, windows and rollups
following; bad settings are refused."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse

from budgets.models import AuditEntry, BudgetWindow, Organization, Reservation
from tests.conftest import assert_error, auth
from tests.tracking.conftest import raw_sums, rollups, run
from tests.tracking.test_record_events import MARCH_10_START, event, make_price, only_result, post
from tracking.models import HourlyRollup, RequestEvent

MYSTERY = "tg-mystery"  # a model no price entry or alias resolves


@pytest.fixture
def catalog(db):
    # The highest rate of each bucket comes from a different entry: input
    # $5/M (tg-big), output $10/M (tg-plain).
    make_price("tg-plain", input="1", output="10")
    make_price("tg-big", input="5", output="2")


def set_policy(org: Organization, policy: str, **rates: Decimal) -> None:
    org.unpriced_policy = policy
    for name, value in rates.items():
        setattr(org, name, value)
    org.save()


def now_event(event_id: str, **fields: object) -> dict:
    """An event that starts now (the period of today's holds)."""
    body = event(event_id, **fields)
    del body["started_at"]
    return body


def decide(api, key: str, path: str, **body: object):
    return api.post(path, json={"team": "search", "user": "alice", **body}, headers=auth(key))


# --- fallback (the default) ----------------------------------------------------


def test_fallback_is_the_default_policy(make_org):
    assert make_org("fresh").unpriced_policy == "fallback"


def test_fallback_without_a_hold_charges_the_catalogs_highest_rate_of_each_bucket(
    api, org, key, make_budget, catalog
):
    budget = make_budget(org, "10")

    result = only_result(post(api, key, event("fb-1", model=MYSTERY)))

    # 1000 input x $5/M + 100 output x $10/M = 0.005 + 0.001.
    assert result == {
        "id": "fb-1",
        "cost_usd": "0.006",
        "priced": False,
        "price_model": None,
        "cost_source": "fallback_rate",
        "duplicate": False,
    }
    stored = RequestEvent.objects.get(event_id="fb-1")
    assert (stored.cost_usd, stored.priced, stored.cost_source) == (
        Decimal("0.006"),
        False,
        "fallback_rate",
    )
    window = BudgetWindow.objects.get(budget=budget, period_start=MARCH_10_START)
    assert window.spent == Decimal("0.006")


def test_fallback_uses_the_orgs_own_rates_where_it_set_them(api, org, key, catalog):
    set_policy(org, "fallback", fallback_input_per_token=Decimal("0.00002"))
    usage = {"input_tokens": 1000, "output_tokens": 100, "cache_read_tokens": 500}

    result = only_result(post(api, key, event("fb-own", model=MYSTERY, usage=usage)))

    # Input and cache reads at the org's $20/M: 1500 x 0.00002 = 0.03; output
    # at the catalog's highest, $10/M: 0.001.
    assert (result["cost_usd"], result["cost_source"]) == ("0.031", "fallback_rate")


def test_fallback_with_a_hold_charges_the_hold_it_settles(api, org, key, make_budget, catalog):
    budget = make_budget(org, "10")
    held = decide(api, key, "/v1/budget/reservations", model=MYSTERY, estimated_cost_usd="0.05")
    assert held.status_code == 201, held.text
    hold_id = held.json()["reservation_id"]

    result = only_result(
        post(api, key, now_event("fb-hold", model=MYSTERY, reservation_id=hold_id))
    )

    assert (result["cost_usd"], result["priced"], result["cost_source"]) == ("0.05", False, "hold")
    assert result["reservation"]["settled"] is True
    assert result["reservation"]["over_hold_usd"] is None
    assert Reservation.objects.get(id=hold_id).status == "settled"
    window = BudgetWindow.objects.get(budget=budget)
    assert (window.spent, window.reserved) == (Decimal("0.05"), Decimal("0"))
    assert RequestEvent.objects.get(event_id="fb-hold").cost_source == "hold"
    # A replay answers what the first recording said.
    replay = only_result(
        post(api, key, now_event("fb-hold", model=MYSTERY, reservation_id=hold_id)), 200
    )
    assert (replay["cost_usd"], replay["cost_source"]) == ("0.05", "hold")


def test_fallback_holds_an_estimate_of_an_unpriced_model_at_the_fallback_rate(
    api, org, key, make_budget, catalog
):
    make_budget(org, "10")
    estimate = {"input_tokens": 1000, "max_output_tokens": 100}

    held = decide(api, key, "/v1/budget/reservations", model=MYSTERY, estimate=estimate)
    checked = decide(api, key, "/v1/budget/check", model=MYSTERY, estimate=estimate)

    assert held.status_code == 201, held.text
    assert held.json()["amount_usd"] == "0.006"
    assert checked.status_code == 200, checked.text
    assert checked.json()["estimated_cost_usd"].rstrip("0") == "0.006"


# --- deny ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/budget/check", "/v1/budget/reservations"])
def test_deny_refuses_checks_and_holds_of_a_model_with_no_price(
    api, org, key, make_budget, catalog, path
):
    set_policy(org, "deny")
    budget = make_budget(org, "10")

    with_amount = decide(api, key, path, model=MYSTERY, estimated_cost_usd="0.01")
    with_estimate = decide(
        api, key, path, model=MYSTERY, estimate={"input_tokens": 10, "max_output_tokens": 10}
    )
    priced = decide(api, key, path, model="tg-plain", estimated_cost_usd="0.01")

    assert_error(with_amount, 422, "unpriced_model", "model")
    assert_error(with_estimate, 422, "unpriced_model", "model")
    assert priced.status_code in (200, 201), priced.text
    assert Reservation.objects.filter(model=MYSTERY).count() == 0
    assert not BudgetWindow.objects.filter(budget=budget, reserved__gt=Decimal("0.01")).exists()


def test_deny_still_charges_the_usage_an_event_reports(api, org, key, catalog):
    set_policy(org, "deny")

    result = only_result(post(api, key, event("deny-1", model=MYSTERY)))

    assert (result["cost_usd"], result["priced"], result["cost_source"]) == (
        "0.006",
        False,
        "fallback_rate",
    )


# --- zero ------------------------------------------------------------------------


def test_zero_keeps_usage_free_until_repriced_when_the_org_chooses_it(
    api, org, key, make_budget, catalog
):
    set_policy(org, "zero")
    budget = make_budget(org, "10")
    held = decide(api, key, "/v1/budget/reservations", model=MYSTERY, estimated_cost_usd="0.05")
    hold_id = held.json()["reservation_id"]

    free = only_result(post(api, key, event("zero-1", model=MYSTERY)))
    settling = only_result(
        post(api, key, now_event("zero-2", model=MYSTERY, reservation_id=hold_id))
    )
    estimate = decide(
        api,
        key,
        "/v1/budget/reservations",
        model=MYSTERY,
        estimate={"input_tokens": 10, "max_output_tokens": 10},
    )

    assert (free["cost_usd"], free["priced"], free["cost_source"]) == ("0", False, "zero")
    assert (settling["cost_usd"], settling["cost_source"]) == ("0", "zero")
    assert_error(estimate, 422, "invalid_field", "model")
    assert sum(w.spent for w in BudgetWindow.objects.filter(budget=budget)) == 0


# --- reprice -----------------------------------------------------------------------


def test_reprice_replaces_a_fallback_cost_with_the_real_price(
    api, org, key, make_budget, catalog, no_lag
):
    budget = make_budget(org, "10")
    team_budget = make_budget(org, "10", scope="team", team="search", period="month")
    only_result(post(api, key, event("rp-1", model=MYSTERY)))
    run("aggregate_usage")
    assert HourlyRollup.objects.get(model=MYSTERY).cost_usd == Decimal("0.006")

    # Still no price: the fallback cost stays, and the event stays unpriced.
    run("reprice", "--since", "2026-03-01")
    assert RequestEvent.objects.get(event_id="rp-1").cost_usd == Decimal("0.006")

    make_price(MYSTERY, input="1", output="1")
    output = run("reprice", "--since", "2026-03-01")

    stored = RequestEvent.objects.get(event_id="rp-1")
    # 1000 x $1/M + 100 x $1/M = 0.0011: the difference, -0.0049, moves.
    assert (stored.cost_usd, stored.priced, stored.price_model, stored.cost_source) == (
        Decimal("0.0011"),
        True,
        MYSTERY,
        "price",
    )
    assert BudgetWindow.objects.get(budget=budget).spent == Decimal("0.0011")
    assert BudgetWindow.objects.get(budget=team_budget).spent == Decimal("0.0011")
    rollup = HourlyRollup.objects.get(model=MYSTERY)
    assert (rollup.cost_usd, rollup.unpriced_requests) == (Decimal("0.0011"), 0)
    assert rollups() == raw_sums()
    assert "Repriced 1 event; total change -$0.0049." in output


# --- bad settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("unpriced_policy", "maybe"),
        ("unpriced_policy", ""),
        ("fallback_input_per_token", Decimal("-0.000001")),
        ("fallback_output_per_token", Decimal("-1")),
    ],
)
def test_bad_settings_are_refused_by_validation_and_by_the_database(make_org, field, value):
    org = make_org("acme")
    setattr(org, field, value)

    with pytest.raises(ValidationError) as raised:
        org.full_clean()
    assert field in raised.value.message_dict

    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.filter(pk=org.pk).update(**{field: value})


@pytest.fixture
def staff_client(client, db):
    user = get_user_model().objects.create_superuser("boss", "", "pw-for-tests-only")
    client.force_login(user)
    return client


def admin_form(**fields: str) -> dict[str, str]:
    return {
        "slug": "acme",
        "name": "acme",
        "time_zone": "UTC",
        "fail_mode": "",
        "unpriced_policy": "fallback",
        "created_at_0": "2026-12-01",
        "created_at_1": "00:00:00",
        **fields,
    }


def test_admin_sets_the_policy_and_the_audit_log_records_it(staff_client, make_org):
    org = make_org("acme")
    url = reverse("admin:budgets_organization_change", args=[org.pk])

    response = staff_client.post(
        url, admin_form(unpriced_policy="deny", fallback_output_per_token="0.00003")
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    org.refresh_from_db()
    assert (org.unpriced_policy, org.fallback_output_per_token) == ("deny", Decimal("0.00003"))
    entry = AuditEntry.objects.get(object_type="organization", action="update")
    assert (entry.old["unpriced_policy"], entry.new["unpriced_policy"]) == ("fallback", "deny")
    assert entry.old["fallback_output_per_token"] is None
    assert Decimal(entry.new["fallback_output_per_token"]) == Decimal("0.00003")


@pytest.mark.parametrize(
    "fields",
    [
        {"unpriced_policy": "sometimes"},
        {"fallback_input_per_token": "-0.1"},
        {"fallback_output_per_token": "lots"},
    ],
)
def test_admin_refuses_bad_values_and_changes_nothing(staff_client, make_org, fields):
    org = make_org("acme")
    url = reverse("admin:budgets_organization_change", args=[org.pk])

    response = staff_client.post(url, admin_form(**fields))

    assert response.status_code == 200  # the form again, with its error
    assert next(iter(fields)) in response.context["adminform"].form.errors
    org.refresh_from_db()
    assert org.unpriced_policy == "fallback"
    assert not AuditEntry.objects.filter(action="update").exists()
