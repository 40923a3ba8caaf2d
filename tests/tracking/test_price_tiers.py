"""Service tiers, long-context tiers and usage parts end to end: events and
holds choose their price by documented fields, bad values are a 422 naming
the field with nothing stored, reprice prices the parts exactly, and
`load_prices --check` lists the models without a price."""

from __future__ import annotations

import io
import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from tests.conftest import auth
from tracking.models import Price, RequestEvent

PARITY_PRICES = Path(__file__).resolve().parent / "parity" / "prices.json"
GPT = "gpt-5.4"  # 2.5e-6 in, 1.5e-5 out; flex 1.25e-6 / 7.5e-6; 272k tier 5e-6 / 2.25e-5


@pytest.fixture
def catalog(transactional_db) -> None:
    call_command("load_prices", str(PARITY_PRICES), stdout=open(os.devnull, "w"))


def _post(api, key, *events):
    return api.post("/v1/events", json={"events": list(events)}, headers=auth(key))


def _event(id: str, **fields) -> dict:
    return {
        "id": id,
        "model": GPT,
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100},
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"service_tier": "turbo"}, "events[1].service_tier"),
        ({"service_tier": 3}, "events[1].service_tier"),
        ({"batch": "yes"}, "events[1].batch"),
        ({"batch": True, "service_tier": "flex"}, "events[1].batch"),
        (
            {"usage": {"prompt_tokens": 10, "completion_tokens": -1}},
            "events[1].usage.completion_tokens",
        ),
        (
            {"usage": {"prompt_tokens": 10**13, "completion_tokens": 1}},
            "events[1].usage.prompt_tokens",
        ),
        (
            {
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 1,
                    "cache_creation_input_tokens": 5,
                    "cache_creation": {"ephemeral_1h_input_tokens": 6},
                }
            },
            "events[1].usage.cache_creation.ephemeral_1h_input_tokens",
        ),
        (
            {"usage": {"inputTokens": 1, "outputTokens": 1, "cacheDetails": [{"ttl": "2h"}]}},
            "events[1].usage.cacheDetails[0].ttl",
        ),
        (
            {"usage": {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": []}},
            "events[1].usage.prompt_tokens_details",
        ),
        (
            {"usage": {"input_tokens": 5, "server_tool_use": {"web_search_requests": 10**7}}},
            "events[1].usage.server_tool_use.web_search_requests",
        ),
        ({"web_search_context_size": "huge"}, "events[1].web_search_context_size"),
        ({"web_search_context_size": 2}, "events[1].web_search_context_size"),
        ({"web_search_calls": -1}, "events[1].web_search_calls"),
        ({"web_search_calls": 10**7}, "events[1].web_search_calls"),
        ({"web_search_calls": "2"}, "events[1].web_search_calls"),
        (
            {
                "usage": {"input_tokens": 5, "server_tool_use": {"web_search_requests": 2}},
                "web_search_calls": 3,
            },
            "events[1].web_search_calls",
        ),
    ],
)
def test_bad_tiers_and_usage_are_a_422_naming_the_field_and_nothing_is_stored(
    api, org, key, catalog, fields, field
):
    response = _post(api, key, _event("good"), _event("bad", **fields))

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert not RequestEvent.objects.filter(org=org).exists()


def test_service_tier_and_batch_choose_the_price(api, org, key, catalog):
    response = _post(
        api,
        key,
        _event("standard"),
        _event("flex", service_tier="flex"),
        _event("batch", batch=True),
        _event("default", service_tier="default"),
    )

    assert response.status_code == 201, response.text
    costs = [Decimal(r["cost_usd"]) for r in response.json()["results"]]
    assert costs == [
        Decimal("0.004"),  # 1000 x 2.5e-6 + 100 x 1.5e-5
        Decimal("0.002"),  # flex: half
        Decimal("0.002"),  # batch
        Decimal("0.004"),
    ]
    stored = dict(RequestEvent.objects.filter(org=org).values_list("event_id", "service_tier"))
    assert stored == {"standard": "", "flex": "flex", "batch": "batch", "default": ""}


def test_replaying_an_event_without_the_new_fields_keeps_its_hash(api, org, key, catalog):
    first = _post(api, key, _event("same"))
    again = _post(api, key, _event("same", service_tier="default", batch=False))

    assert first.status_code == 201
    assert again.status_code == 200, again.text
    assert again.json()["results"][0]["duplicate"] is True


def test_a_large_prompts_hold_is_priced_in_the_tier_it_will_fall_in(api, org, key, catalog):
    def hold(input_tokens: int, **fields) -> Decimal:
        response = api.post(
            "/v1/budget/reservations",
            json={
                "model": GPT,
                "estimate": {"input_tokens": input_tokens, "max_output_tokens": 1000},
                **fields,
            },
            headers=auth(key),
        )
        assert response.status_code == 201, response.text
        return Decimal(response.json()["amount_usd"])

    assert hold(272_000) == Decimal("0.695")  # 272000 x 2.5e-6 + 1000 x 1.5e-5
    assert hold(272_001) == Decimal("1.382505")  # 272001 x 5e-6 + 1000 x 2.25e-5
    assert hold(100_000, service_tier="flex") == Decimal("0.1325")  # 1.25e-6, 7.5e-6
    bad = api.post(
        "/v1/budget/reservations",
        json={"model": GPT, "estimate": {"input_tokens": 1}, "service_tier": "gold"},
        headers=auth(key),
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "service_tier"


def test_reprice_prices_the_parts_and_tiers_exactly(api, org, key, catalog):
    usage = {
        "input_tokens": 50,
        "output_tokens": 200,
        "cache_read_input_tokens": 3000,
        "cache_creation_input_tokens": 2000,
        "cache_creation": {"ephemeral_1h_input_tokens": 1500, "ephemeral_5m_input_tokens": 500},
        "server_tool_use": {"web_search_requests": 2},
    }
    event = {"id": "c1", "model": "claude-sonnet-4-5", "usage": usage}
    recorded = _post(api, key, event).json()["results"][0]
    # 50 x 3e-6 + 200 x 1.5e-5 + 3000 x 3e-7 + 500 x 3.75e-6 + 1500 x 6e-6 + 2 x 0.01
    expected = Decimal("0.034925")
    assert Decimal(recorded["cost_usd"]) == expected

    # A price correction, then reprice --all: the parts are priced again.
    price = Price.objects.get(model="claude-sonnet-4-5", service_tier="")
    Price.objects.create(
        **{
            f.name: getattr(price, f.name)
            for f in Price._meta.fields
            if f.name not in ("id", "effective_from")
        }
        | {"cache_write_1h_per_token": Decimal("0.000007")},
        effective_from=timezone.now() - timedelta(days=1),
    )
    call_command("reprice", "--since", "2000-01-01", "--all", stdout=io.StringIO())

    stored = RequestEvent.objects.get(event_id="c1")
    assert stored.cache_write_1h_tokens == 1500 and stored.web_search_calls == 2
    assert stored.cost_usd == expected + 1500 * Decimal("0.000001")


def test_search_context_size_chooses_the_search_price_and_reprice_keeps_it(api, org, key, catalog):
    # gpt-4o-mini-search-preview: 1.5e-7 in, 6e-7 out; a search $0.025 low,
    # $0.0275 medium, $0.03 high.
    def event(id: str, **fields) -> dict:
        usage = {"prompt_tokens": 1000, "completion_tokens": 100}
        return {"id": id, "model": "gpt-4o-mini-search-preview", "usage": usage, **fields}

    response = _post(
        api,
        key,
        event("none"),
        event("low", web_search_calls=2, web_search_context_size="LOW"),
        event("medium", web_search_calls=2),
        event("high", web_search_calls=2, web_search_context_size="high"),
    )

    assert response.status_code == 201, response.text
    tokens = Decimal("0.00021")  # 1000 x 1.5e-7 + 100 x 6e-7
    costs = [Decimal(r["cost_usd"]) for r in response.json()["results"]]
    assert costs == [
        tokens,
        tokens + Decimal("0.05"),
        tokens + Decimal("0.055"),
        tokens + Decimal("0.06"),
    ]
    stored = {
        e.event_id: (e.web_search_calls, e.web_search_context_size)
        for e in RequestEvent.objects.filter(org=org)
    }
    assert stored == {"none": (0, ""), "low": (2, "low"), "medium": (2, ""), "high": (2, "high")}

    price = Price.objects.get(model="gpt-4o-mini-search-preview", service_tier="")
    assert (price.web_search_low_per_call, price.web_search_per_call) == (
        Decimal("0.025"),
        Decimal("0.0275"),
    )
    assert price.web_search_high_per_call == Decimal("0.03")
    assert price.web_search_per_request is False
    Price.objects.create(
        **{
            f.name: getattr(price, f.name)
            for f in Price._meta.fields
            if f.name not in ("id", "effective_from")
        }
        | {"web_search_high_per_call": Decimal("0.04")},
        effective_from=timezone.now() - timedelta(days=1),
    )
    call_command("reprice", "--since", "2000-01-01", "--all", stdout=io.StringIO())

    repriced = dict(RequestEvent.objects.filter(org=org).values_list("event_id", "cost_usd"))
    assert repriced["high"] == tokens + Decimal("0.08")
    assert repriced["low"] == tokens + Decimal("0.05")


def test_gemini_grounding_is_billed_per_request_or_per_query_as_the_map_says(
    api, org, key, catalog
):
    def event(id: str, model: str, calls: int) -> dict:
        usage = {"promptTokenCount": 1000, "candidatesTokenCount": 100}
        return {"id": id, "model": model, "usage": usage, "web_search_calls": calls}

    response = _post(
        api,
        key,
        event("g25-0", "gemini-2.5-pro", 0),
        event("g25-3", "gemini-2.5-pro", 3),
        event("g3-0", "vertex_ai/gemini-3-pro-preview", 0),
        event("g3-3", "vertex_ai/gemini-3-pro-preview", 3),
    )

    assert response.status_code == 201, response.text
    costs = [Decimal(r["cost_usd"]) for r in response.json()["results"]]
    assert costs[1] - costs[0] == Decimal("0.035")  # one grounded prompt, whatever its queries
    assert costs[3] - costs[2] == Decimal("0.042")  # 3 queries x $0.014
    assert Price.objects.get(model="gemini-2.5-pro", service_tier="").web_search_per_request


def test_load_prices_check_lists_models_seen_without_a_price(org, make_event, catalog):
    out = io.StringIO()
    call_command("load_prices", "--check", stdout=out)
    assert "prices.json" in out.getvalue()
    assert "Every model seen in the last 30 days has a price." in out.getvalue()

    make_event(org, model="gpt-9-unknown", priced=False, cost="0.25")
    make_event(org, model="gpt-9-unknown", priced=False, cost="0.5")
    make_event(
        org, model="old-unknown", priced=False, started_at=timezone.now() - timedelta(days=40)
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 model"):
        call_command("load_prices", "--check", stdout=out)
    assert "gpt-9-unknown: 2 events, charged $0.75" in out.getvalue()
    assert "old-unknown" not in out.getvalue()


def test_reprice_prices_cached_audio_and_audio_in_the_tier_exactly(api, org, key, catalog):
    # gemini-2.5-flash: text 3e-7, audio 1e-6 (3e-7 above 200k), cache read
    # 3e-8, cached audio 1e-7, output 2.5e-6.
    usage = {
        "promptTokenCount": 250_000,
        "cachedContentTokenCount": 50_000,
        "candidatesTokenCount": 800,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 150_000},
            {"modality": "AUDIO", "tokenCount": 100_000},
        ],
        "cacheTokensDetails": [
            {"modality": "TEXT", "tokenCount": 20_000},
            {"modality": "AUDIO", "tokenCount": 30_000},
        ],
    }
    event = {"id": "a1", "model": "gemini-2.5-flash", "usage": usage}
    recorded = _post(api, key, event).json()["results"][0]
    # 130000 x 3e-7 + 70000 x 3e-7 + 20000 x 3e-8 + 30000 x 1e-7 + 800 x 2.5e-6
    expected = Decimal("0.0656")
    assert Decimal(recorded["cost_usd"]) == expected

    price = Price.objects.get(model="gemini-2.5-flash", service_tier="")
    assert price.tier_threshold_tokens == 200_000
    assert price.input_audio_above_threshold_per_token == Decimal("3e-7")
    Price.objects.create(
        **{
            f.name: getattr(price, f.name)
            for f in Price._meta.fields
            if f.name not in ("id", "effective_from")
        }
        | {"cache_read_audio_per_token": Decimal("2e-7")},
        effective_from=timezone.now() - timedelta(days=1),
    )
    call_command("reprice", "--since", "2000-01-01", "--all", stdout=io.StringIO())

    stored = RequestEvent.objects.get(event_id="a1")
    assert stored.cache_read_audio_tokens == 30_000 and stored.input_audio_tokens == 70_000
    assert stored.cost_usd == expected + 30_000 * Decimal("1e-7")


def test_the_cost_expression_is_inlined_where_events_are_repriced(db):
    # An inlined SQL function leaves its body in the verbose plan, not a call:
    # tollgate_cost stays one plain expression as its parameters grow.
    from tracking.selectors import QUERIES

    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN (VERBOSE, FORMAT JSON) {QUERIES['event_costs']}", {"event_ids": [1, 2]}
        )
        plan = str(cursor.fetchone()[0])
    assert "tollgate_cost" not in plan
    assert "web_search_per_request" in plan and "cache_read_audio_per_token" in plan
