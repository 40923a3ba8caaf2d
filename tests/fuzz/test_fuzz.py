"""Issue 6 §4: at least 10,000 malformed or hostile requests against every JSON
endpoint of a live server. Every answer must be a documented 4xx in API.md's
error shape (naming the field at fault for a 422), never a 5xx or a hang,
and no table may change over a list of rejected requests.

Reproducible: hypothesis is derandomized, with a fixed number of examples
per endpoint; a failure is shrunk to the smallest list of requests that
shows it. The requests per endpoint are printed at the end of the run.
"""

from __future__ import annotations

import pytest

from budgets.models import Budget, Reservation, Team
from tests.conftest import auth
from tests.fuzz import cases
from tests.fuzz.conftest import COMPLETED, COUNTS, snapshot

# (examples, minimum requests) per test; an example is a list of 4-12
# requests (6-7 on average). The minimums add up to 10,000. The lists drawn
# differ between a module run and the full suite, and between full-suite runs
# once tests are added before them: test_one_event sent 1,275 requests in one
# CI run and 1,198 in the next, after four test files were added (cause not
# traced), hence its larger margin.
QUOTAS = {
    "test_check": (176, 1050),
    "test_reservations": (176, 1050),
    "test_one_event": (200, 1200),
    "test_event_batches": (172, 1100),
    "test_put_budget": (187, 1100),
    "test_delete_budget": (124, 700),
    "test_release": (119, 700),
    # Beyond the 10,000 of issue 6: the endpoint came later.
    "test_extend": (100, 550),
    "test_status_query": (110, 700),
    "test_usage_query": (107, 700),
    "test_audit_query": (100, 500),
    "test_summary_query": (126, 700),
    "test_prices_and_budget_list": (88, 500),
    "test_wrong_methods": (84, 500),
}


def run(fuzzer, name: str, strategy) -> None:
    examples, minimum = QUOTAS[name]
    fuzzer.run(strategy, examples=examples)
    fuzzer.require(minimum)


def test_check(fuzzer, world):
    run(
        fuzzer,
        "test_check",
        cases.decision_case(world, "/v1/budget/check", "POST /v1/budget/check"),
    )


def test_reservations(fuzzer, world):
    strategy = cases.decision_case(world, "/v1/budget/reservations", "POST /v1/budget/reservations")
    run(fuzzer, "test_reservations", strategy)


def test_one_event(fuzzer, world):
    run(fuzzer, "test_one_event", cases.single_event_case(world))


def test_event_batches(fuzzer, world):
    run(fuzzer, "test_event_batches", cases.batch_case(world))


def test_put_budget(fuzzer, world):
    run(fuzzer, "test_put_budget", cases.put_budget_case(world))


def test_delete_budget(fuzzer, world):
    run(fuzzer, "test_delete_budget", cases.delete_budget_case(world))


def test_release(fuzzer, world):
    run(fuzzer, "test_release", cases.release_case(world))


def test_extend(fuzzer, world):
    run(fuzzer, "test_extend", cases.extend_case(world))


def test_status_query(fuzzer, world):
    run(fuzzer, "test_status_query", cases.status_case(world))


def test_usage_query(fuzzer, world):
    run(fuzzer, "test_usage_query", cases.usage_case(world))


def test_audit_query(fuzzer, world):
    run(fuzzer, "test_audit_query", cases.audit_case(world))


def test_summary_query(fuzzer, world):
    run(fuzzer, "test_summary_query", cases.summary_case(world))


def test_prices_and_budget_list(fuzzer, world):
    from hypothesis import strategies as st

    strategy = st.one_of(cases.prices_case(world), cases.list_budgets_case(world))
    run(fuzzer, "test_prices_and_budget_list", strategy)


def test_wrong_methods(fuzzer, world):
    run(fuzzer, "test_wrong_methods", cases.wrong_method_case(world))


# --- The checks can fail --------------------------------------------------------------


def test_the_unbroken_requests_are_accepted_and_show_in_the_digests(api, world):
    """Each base request the fuzz cases break is valid as it stands, and its
    write shows in the digests: a rejected request that wrote would too."""
    admin = auth(world.admin)
    sends = [
        ("POST", "/v1/budget/check", cases.DECISION),
        ("POST", "/v1/budget/reservations", {**cases.DECISION, "user": "fresh-user-2"}),
        ("POST", "/v1/events", cases.EVENT),
        ("POST", "/v1/events", {"events": [{**cases.EVENT, "id": "fz-batch"}]}),
        ("PUT", "/v1/budgets/team/fresh-team/day", cases.BUDGET),
        ("DELETE", "/v1/budgets/team/search/month", None),
        ("GET", "/v1/budget/status?team=fresh-team-3", None),
    ]
    for method, path, body in sends:
        before = snapshot()
        response = api.request(method, path, json=body, headers=admin)
        assert response.status_code in (200, 201, 204), (path, response.text)
        assert snapshot() != before, path
    mine = Reservation.objects.filter(org__slug="fuzz", status="active").first()
    before = snapshot()
    released = api.post(f"/v1/budget/reservations/{mine.id}/release", headers=admin)
    assert released.status_code == 200, released.text
    assert snapshot() != before
    assert Team.objects.filter(slug="fresh-team").exists()
    assert Budget.objects.filter(team__slug="fresh-team").exists()


def test_sql_looking_names_are_stored_as_they_are(api, world):
    """The hostile strings of the fuzz cases, where they are valid: stored
    verbatim, as data (parameters, never SQL text)."""
    from tests.fuzz.values import SQL
    from tracking.models import RequestEvent

    admin = auth(world.admin)
    for index, text in enumerate(SQL):
        event = {**cases.EVENT, "id": text, "team": text, "user": text, "tags": {"t": text}}
        recorded = api.post("/v1/events", json=event, headers=admin)
        assert recorded.status_code == 201, recorded.text
        stored = RequestEvent.objects.select_related("team", "user").get(event_id=text)
        assert (stored.team.slug, stored.user.external_id, stored.tags) == (text, text, {"t": text})
        checked = api.post(
            "/v1/budget/check", json={"team": text, "user": f"u{index}"}, headers=admin
        )
        assert checked.status_code == 200, checked.text
        if "/" in text:
            continue  # not one path segment
        put = api.put(
            f"/v1/budgets/user/{cases.segment(text)}/week", json=cases.BUDGET, headers=admin
        )
        assert put.status_code == 200, put.text
        assert put.json()["id"] == text
    in_paths = [text for text in SQL if "/" not in text]
    weekly = Budget.objects.filter(user__external_id__in=in_paths, period="week")
    assert weekly.count() == len(in_paths)


# --- The total -------------------------------------------------------------------------


def test_at_least_ten_thousand_requests_in_all():
    if not set(QUOTAS) <= COMPLETED:
        pytest.skip("the total is checked when every fuzz test of this module ran")
    total = sum(COUNTS.values())
    assert total >= 10_000, dict(COUNTS)
