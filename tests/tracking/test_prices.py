"""Price catalog: load_prices (LiteLLM format) and GET /v1/prices."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import httpx
import pytest
from django.core.management import CommandError, call_command

from tracking.models import Price


def _load(path) -> str:
    out = io.StringIO()
    call_command("load_prices", str(path), stdout=out)
    return out.getvalue()


@pytest.fixture
def price_file(tmp_path):
    def write(entries: dict) -> str:
        path = tmp_path / "prices.json"
        path.write_text(json.dumps(entries))
        return path

    return write


LITELLM_SAMPLE = {
    "sample_spec": {"mode": "chat", "input_cost_per_token": 0},
    "gpt-x": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
        "output_cost_per_reasoning_token": 2e-05,
    },
    "claude-x": {
        "litellm_provider": "anthropic",
        "mode": "chat",
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_creation_input_token_cost": 3.75e-06,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
    },
    "embed-x": {"litellm_provider": "openai", "mode": "embedding", "input_cost_per_token": 1e-08},
    "img-x": {"litellm_provider": "openai", "mode": "image_generation"},
}


def test_load_prices_imports_chat_models_and_skips_the_rest(db, price_file):
    output = _load(price_file(LITELLM_SAMPLE))

    assert "2 added, 0 changed, 0 unchanged, 2 skipped" in output
    assert "embedding 1" in output and "image_generation 1" in output
    gpt = Price.objects.get(model="gpt-x", service_tier="")
    assert gpt.provider == "openai"
    assert gpt.input_per_token == Decimal("0.0000025")  # exact, not a float
    assert gpt.reasoning_per_token == Decimal("0.00002")
    claude = Price.objects.get(model="claude-x", service_tier="")
    assert claude.tier_threshold_tokens == 200_000
    assert claude.input_above_threshold_per_token == Decimal("0.000006")
    assert claude.cache_write_per_token == Decimal("0.00000375")


def test_load_prices_is_idempotent_and_keeps_history(db, price_file):
    _load(price_file(LITELLM_SAMPLE))
    again = _load(price_file(LITELLM_SAMPLE))
    assert "0 added, 0 changed, 2 unchanged" in again

    changed = json.loads(json.dumps(LITELLM_SAMPLE))
    changed["gpt-x"]["input_cost_per_token"] = 2e-06
    output = _load(price_file(changed))

    assert "0 added, 1 changed, 1 unchanged" in output
    history = list(Price.objects.filter(model="gpt-x", service_tier="").order_by("effective_from"))
    assert [p.input_per_token for p in history] == [Decimal("0.0000025"), Decimal("0.000002")]


def test_load_prices_rejects_missing_and_broken_files(db, tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        _load(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CommandError, match="not a JSON price map"):
        _load(broken)


def test_shipped_price_file_loads(db):
    out = io.StringIO()
    call_command("load_prices", stdout=out)
    assert Price.objects.filter(provider="openai").exists()
    assert Price.objects.filter(provider="anthropic").exists()
    assert Price.objects.filter(provider="google").exists()


def test_prices_endpoint_is_cacheable(server, transactional_db, price_file):
    _load(price_file(LITELLM_SAMPLE))

    first = httpx.get(server.url + "/v1/prices")
    cached = httpx.get(server.url + "/v1/prices", headers={"If-None-Match": first.headers["etag"]})
    stale = httpx.get(server.url + "/v1/prices", headers={"If-None-Match": '"other"'})

    assert first.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=300"
    models = {p["model"]: p for p in first.json()["prices"] if p["service_tier"] == ""}
    assert set(models) == {"gpt-x", "claude-x"}
    assert models["gpt-x"]["input_per_token"] == "0.0000025"
    assert cached.status_code == 304 and cached.content == b""
    assert stale.status_code == 200


def test_prices_endpoint_shows_the_price_in_effect_and_a_new_etag(
    server, transactional_db, price_file
):
    _load(price_file(LITELLM_SAMPLE))
    before = httpx.get(server.url + "/v1/prices")
    changed = json.loads(json.dumps(LITELLM_SAMPLE))
    changed["gpt-x"]["output_cost_per_token"] = 8e-06
    _load(price_file(changed))

    after = httpx.get(server.url + "/v1/prices")

    assert after.headers["etag"] != before.headers["etag"]
    models = {p["model"]: p for p in after.json()["prices"] if p["service_tier"] == ""}
    assert models["gpt-x"]["output_per_token"] == "0.000008"
