"""Model names as gateways send them, resolved to price entries through the
real server and database: provider prefixes, case, dated snapshots, Bedrock
ids and an org's aliases (Azure deployment names), for events, holds'
estimates, reprice and GET /v1/prices?model=. The names are real ones from
each provider; the catalog's keys are spelled as LiteLLM's price map spells
them."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import call_command

from tests.conftest import assert_error, auth
from tracking.models import ModelAlias, RequestEvent

MARCH_10 = "2026-03-10T12:00:00Z"

# Per-token prices. "azure/gpt-4o" is priced apart from "gpt-4o" (unlike the
# real map) so that a test can tell which of the two priced an event.
CATALOG = {
    "gpt-4o": {"litellm_provider": "openai", "input": "2.5e-06", "output": "1e-05"},
    "gpt-4o-mini": {"litellm_provider": "openai", "input": "1.5e-07", "output": "6e-07"},
    "azure/gpt-4o": {"litellm_provider": "azure", "input": "2.75e-06", "output": "1.1e-05"},
    "claude-sonnet-4-5": {"litellm_provider": "anthropic", "input": "3e-06", "output": "1.5e-05"},
    "anthropic.claude-haiku-4-5-20251001-v1:0": {
        "litellm_provider": "bedrock",
        "input": "1.1e-06",
        "output": "5.5e-06",
    },
    "gemini-2.5-pro": {
        "litellm_provider": "vertex_ai-language-models",
        "input": "1.25e-06",
        "output": "1e-05",
    },
}


def cost_of(key: str, input_tokens: int = 1000, output_tokens: int = 100) -> Decimal:
    entry = CATALOG[key]
    return input_tokens * Decimal(entry["input"]) + output_tokens * Decimal(entry["output"])


@pytest.fixture
def catalog(transactional_db, tmp_path) -> None:
    """CATALOG loaded the way operators load LiteLLM's map (load_prices)."""
    litellm = {
        name: {
            "litellm_provider": entry["litellm_provider"],
            "mode": "chat",
            "input_cost_per_token": float(entry["input"]),
            "output_cost_per_token": float(entry["output"]),
        }
        for name, entry in CATALOG.items()
    }
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(litellm))
    call_command("load_prices", str(path), stdout=io.StringIO())


def record(api, key: str, event_id: str, model: str, **fields) -> dict:
    body = {
        "id": event_id,
        "team": "search",
        "user": "alice",
        "model": model,
        "usage": {"input_tokens": 1000, "output_tokens": 100},
        "started_at": MARCH_10,
        **fields,
    }
    response = api.post("/v1/events", json=body, headers=auth(key))
    assert response.status_code in (200, 201), response.text
    [result] = response.json()["results"]
    return result


@pytest.mark.parametrize(
    ("sent", "entry"),
    [
        ("gpt-4o", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        # The map's own key wins over a shorter name it also has.
        ("azure/gpt-4o", "azure/gpt-4o"),
        ("azure/gpt-4o-mini", "gpt-4o-mini"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("vertex_ai/claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("gemini/gemini-2.5-pro", "gemini-2.5-pro"),
        ("vertex_ai/gemini-2.5-pro", "gemini-2.5-pro"),
        ("google/gemini-2.5-pro", "gemini-2.5-pro"),
        ("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("bedrock/converse/global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        # A Bedrock id whose foundation-model key the map holds: that key, not
        # the first-party model's.
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0"),
        (
            "bedrock/anthropic.claude-haiku-4-5-20251001-v1:0",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
        ),
    ],
)
def test_gateway_names_are_priced_at_the_entry_they_resolve_to(api, org, key, catalog, sent, entry):
    result = record(api, key, "ev-1", sent)

    assert result["priced"] is True
    assert result["price_model"] == entry
    assert Decimal(result["cost_usd"]) == cost_of(entry)
    stored = RequestEvent.objects.get(event_id="ev-1")
    assert (stored.model, stored.price_model, stored.cost_usd) == (sent, entry, cost_of(entry))


@pytest.mark.parametrize(
    "sent",
    [
        "gpt-4o-mini-typo",  # nothing strips a word that is not a date
        "gpt-4o-2024-13-45",  # not a real date
        "openrouter/openai/gpt-4o",  # not a provider prefix that is stripped
        "claude-sonnet-4",  # a shorter name is not a prefix match
    ],
)
def test_names_that_resolve_to_no_entry_stay_unpriced(api, org, key, catalog, sent):
    result = record(api, key, "ev-1", sent)

    # Charged at the fallback rate (the org's default unpriced policy).
    assert (result["priced"], result["price_model"], result["cost_source"]) == (
        False,
        None,
        "fallback_rate",
    )


def test_callers_own_cost_names_no_entry(api, org, key, catalog):
    result = record(api, key, "ev-1", "openai/gpt-4o", cost_usd="0.5")

    assert (result["priced"], result["cost_usd"], result["price_model"]) == (True, "0.5", None)


def test_a_replay_answers_the_entry_of_the_first_recording(api, org, key, catalog):
    first = record(api, key, "ev-1", "openai/gpt-4o")
    again = record(api, key, "ev-1", "openai/gpt-4o")

    assert again["duplicate"] is True
    assert again["price_model"] == first["price_model"] == "gpt-4o"


def test_an_org_alias_maps_an_azure_deployment_to_its_base_model(
    api, org, key, make_org, make_key, catalog
):
    ModelAlias.objects.create(org=org, name="my-gpt4o-prod", model="gpt-4o")
    other_key = make_key(make_org("globex"))

    plain = record(api, key, "ev-1", "my-gpt4o-prod")
    prefixed = record(api, key, "ev-2", "azure/my-gpt4o-prod")
    elsewhere = record(api, other_key, "ev-1", "my-gpt4o-prod")

    assert (plain["price_model"], Decimal(plain["cost_usd"])) == ("gpt-4o", cost_of("gpt-4o"))
    assert prefixed["price_model"] == "gpt-4o"
    # Another org's alias does not apply.
    assert (elsewhere["priced"], elsewhere["price_model"]) == (False, None)


def test_the_price_maps_own_key_wins_over_an_alias(api, org, key, catalog):
    ModelAlias.objects.create(org=org, name="gpt-4o-mini", model="gpt-4o")

    result = record(api, key, "ev-1", "gpt-4o-mini")

    assert result["price_model"] == "gpt-4o-mini"


def test_a_holds_estimate_is_priced_through_the_same_resolution(
    api, org, key, make_budget, catalog
):
    # Under "zero" an estimate that resolves to no price is refused (under the
    # default "fallback" it would be held at the fallback rate).
    org.unpriced_policy = "zero"
    org.save(update_fields=["unpriced_policy"])
    ModelAlias.objects.create(org=org, name="my-gpt4o-prod", model="gpt-4o")
    make_budget(org, "1")
    estimate = {"input_tokens": 1200, "max_output_tokens": 800}

    def hold(model: str):
        body = {"team": "search", "user": "alice", "model": model, "estimate": estimate}
        return api.post("/v1/budget/reservations", json=body, headers=auth(key))

    prefixed, aliased, bedrock, typo = (
        hold("openai/gpt-4o"),
        hold("my-gpt4o-prod"),
        hold("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        hold("gpt-4o-mini-typo"),
    )

    # 1200 x 2.5/M + 800 x 10/M = 0.003 + 0.008.
    assert prefixed.status_code == 201, prefixed.text
    assert prefixed.json()["amount_usd"] == "0.011"
    assert aliased.json()["amount_usd"] == "0.011"
    # 1200 x 3/M + 800 x 15/M = 0.0036 + 0.012.
    assert bedrock.json()["amount_usd"] == "0.0156"
    assert_error(typo, 422, "invalid_field", "model")


def test_reprice_resolves_names_and_records_the_entry(api, org, key, tmp_path):
    result = record(api, key, "ev-1", "anthropic/claude-sonnet-4-5")
    assert result["priced"] is False

    catalog_path = tmp_path / "prices.json"
    catalog_path.write_text(
        json.dumps(
            {
                "claude-sonnet-4-5": {
                    "litellm_provider": "anthropic",
                    "mode": "chat",
                    "input_cost_per_token": 3e-06,
                    "output_cost_per_token": 1.5e-05,
                }
            }
        )
    )
    call_command("load_prices", str(catalog_path), stdout=io.StringIO())
    call_command("reprice", "--since", "2026-03-01", stdout=io.StringIO())

    stored = RequestEvent.objects.get(event_id="ev-1")
    assert (stored.priced, stored.price_model) == (True, "claude-sonnet-4-5")
    assert stored.cost_usd == cost_of("claude-sonnet-4-5")


# --- GET /v1/prices?model= ----------------------------------------------------


def test_prices_answer_the_entry_a_name_resolves_to(api, org, catalog):
    catalog_answer = api.get("/v1/prices").json()["prices"]
    response = api.get("/v1/prices", params={"model": "openai/gpt-4o-2024-11-20"})

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=300"
    body = response.json()
    assert (body["model"], body["price_model"]) == ("openai/gpt-4o-2024-11-20", "gpt-4o")
    assert body["prices"] == [
        p for p in catalog_answer if p["model"] == "gpt-4o" and p["service_tier"] == ""
    ]
    assert "etag" in response.headers


def test_prices_apply_an_orgs_aliases_only_for_its_key(api, org, key, make_org, make_key, catalog):
    ModelAlias.objects.create(org=org, name="my-gpt4o-prod", model="gpt-4o")
    other_key = make_key(make_org("globex"))

    anonymous = api.get("/v1/prices", params={"model": "my-gpt4o-prod"})
    mine = api.get("/v1/prices", params={"model": "my-gpt4o-prod"}, headers=auth(key))
    theirs = api.get("/v1/prices", params={"model": "my-gpt4o-prod"}, headers=auth(other_key))
    bad_key = api.get("/v1/prices", params={"model": "gpt-4o"}, headers=auth("tg_nope"))

    assert_error(anonymous, 404, "not_found", "model")
    assert mine.status_code == 200, mine.text
    assert mine.json()["price_model"] == "gpt-4o"
    assert mine.headers["cache-control"] == "private, max-age=300"
    assert_error(theirs, 404, "not_found", "model")
    assert_error(bad_key, 401, "unauthenticated")


def test_prices_of_an_unknown_model_are_a_404(api, catalog):
    response = api.get("/v1/prices", params={"model": "gpt-4o-mini-typo"})

    assert_error(response, 404, "not_found", "model")
