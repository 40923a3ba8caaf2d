"""A per-request cost cap (max_request_usd on an org, team or API key): a
check or reservation whose estimate is over it gets 402
request_too_expensive naming the tightest cap it is over, and nothing is
held. Caps are read at decision time: a change applies to the next request."""

from __future__ import annotations

from decimal import Decimal

from budgets.models import ApiKey, Organization, Reservation, Team
from tests.conftest import auth
from tracking.models import Price


def decide(api, key, path="reservations", **body):
    body = {"team": "research", "user": "bob", **body}
    return api.post(f"/v1/budget/{path}", json=body, headers=auth(key))


def test_an_estimate_over_the_org_cap_is_refused_and_nothing_is_held(api, org, key):
    Organization.objects.filter(pk=org.pk).update(max_request_usd=Decimal("0.50"))

    response = decide(api, key, estimated_cost_usd="0.75")

    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert error["code"] == "request_too_expensive"
    assert (error["scope"], error["id"], error["max_request_usd"]) == ("org", "acme", "0.5")
    assert error["amount_usd"] == "0.75"
    assert error["message"] == (
        "This request's estimate of $0.75 is over the org 'acme' cap of $0.50 per request; "
        "nothing was held."
    )
    assert Reservation.objects.count() == 0
    assert decide(api, key, estimated_cost_usd="0.50").status_code == 201


def test_checks_are_refused_alike(api, org, key):
    Organization.objects.filter(pk=org.pk).update(max_request_usd=Decimal("1"))
    assert decide(api, key, "check", estimated_cost_usd="1.01").status_code == 402
    assert decide(api, key, "check", estimated_cost_usd="1").status_code == 200


def test_the_tightest_of_key_team_and_org_caps_is_named(api, org, key):
    Organization.objects.filter(pk=org.pk).update(max_request_usd=Decimal("5"))
    decide(api, key, estimated_cost_usd="0.01")  # registers the team
    Team.objects.filter(org=org, slug="research").update(max_request_usd=Decimal("2"))
    lookup_id = key.split("_")[1]
    ApiKey.objects.filter(lookup_id=lookup_id).update(max_request_usd=Decimal("3"))

    over_team = decide(api, key, estimated_cost_usd="2.5").json()["error"]
    assert (over_team["scope"], over_team["id"]) == ("team", "research")
    other_team = decide(api, key, team="other", estimated_cost_usd="3.5").json()["error"]
    assert (other_team["scope"], other_team["id"]) == ("key", lookup_id)
    assert decide(api, key, team="other", estimated_cost_usd="2.5").status_code == 201


def test_an_estimate_in_tokens_is_capped_at_its_price(api, org, key):
    Price.objects.create(
        provider="openai",
        model="gpt-4o",
        input_per_token=Decimal("0.0000025"),
        output_per_token=Decimal("0.00001"),
    )
    Organization.objects.filter(pk=org.pk).update(max_request_usd=Decimal("0.01"))
    estimate = {"input_tokens": 1000, "max_output_tokens": 1000}  # $0.0125

    response = decide(api, key, model="gpt-4o", estimate=estimate)

    assert response.status_code == 402, response.text
    assert response.json()["error"]["amount_usd"] == "0.0125"


def test_concurrent_holds_are_capped_one_by_one(api, org, key):
    """Holds that arrive together are decided in one batch; each is capped."""
    import concurrent.futures

    Organization.objects.filter(pk=org.pk).update(max_request_usd=Decimal("1"))
    amounts = ["0.5", "1.5"] * 20
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(
            pool.map(lambda a: decide(api, key, estimated_cost_usd=a).status_code, amounts)
        )
    assert statuses == [201, 402] * 20
    assert Reservation.objects.count() == 20
