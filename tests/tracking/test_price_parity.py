"""Tollgate's cost equals LiteLLM's for every case of the parity corpus.

tests/tracking/parity/corpus.json holds real-shaped usage objects of every
shape, tier and paid tool Tollgate prices (OpenAI Chat, Responses and
Realtime, audio, realtime, image generation, Anthropic 5-minute and 1-hour cache writes and
web searches, Anthropic served in the US, Bedrock Converse, Gemini, DeepSeek,
xAI; the 200k and 272k tiers at and above the threshold; flex, priority and
batch; OpenAI web searches at each search context size, Chat and Responses;
Gemini grounding billed per request (2.x) and per query (3); cached audio
and audio in the long-context tier, OpenAI Realtime and Gemini).
tests/tracking/parity/prices.json is the part of LiteLLM's price map they use;
one entry, gpt-4o-mini-search-preview, carries the per-size search prices
LiteLLM's map had for it before it made them equal (low $25, medium $27.50,
high $30 per 1,000), since no entry of the pinned map prices the sizes
differently and the choice of size must show in the cost. The same map is loaded into Tollgate by `load_prices` and given to
the pinned LiteLLM (tests/requirements-litellm.txt) in its own virtual
environment, which prices each case with its own functions
(parity/litellm_costs.py); the events are then recorded through the real
server, and every cost must agree to 1e-10 USD.

Where LiteLLM disagrees with a provider's published pricing Tollgate follows
the provider; those cases are not in this corpus but in
docs/api.md ("Where Tollgate and LiteLLM differ") and in
test_batch_without_batch_prices_halves_every_rate_as_providers_bill.
"""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.conftest import auth
from tests.litellm_env import LiteLLMUnavailable, litellm_python

PARITY = Path(__file__).resolve().parent / "parity"
CORPUS = json.loads((PARITY / "corpus.json").read_text())
TOLERANCE = Decimal("1e-10")


@pytest.fixture(scope="module")
def litellm_costs() -> dict[str, Decimal]:
    try:
        python = litellm_python()
    except LiteLLMUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"LiteLLM's virtual environment could not be made: {exc}")
        pytest.skip(f"LiteLLM's virtual environment could not be made: {exc}")
    done = subprocess.run(
        [str(python), str(PARITY / "litellm_costs.py"), "corpus.json", "prices.json"],
        cwd=PARITY,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: Decimal(cost) for name, cost in json.loads(done.stdout).items()}


def _event(index: int, case: dict) -> dict:
    event = {
        "id": f"parity-{index}",
        "model": case["model"],
        "usage": case["usage"],
        "started_at": "2026-11-02T10:00:00Z",
    }
    for name in ("service_tier", "batch", "web_search_calls", "web_search_context_size"):
        if name in case:
            event[name] = case[name]
    return event


def test_corpus_covers_every_shape_tier_and_tool():
    assert len(CORPUS) >= 40
    assert len({case["name"] for case in CORPUS}) == len(CORPUS)
    shapes = {case["shape"] for case in CORPUS}
    assert shapes >= {
        "openai",
        "openai_responses",
        "openai_realtime",
        "anthropic",
        "bedrock",
        "gemini",
        "deepseek",
        "xai",
    }
    text = json.dumps(CORPUS)
    for needle in (
        "ephemeral_1h_input_tokens",
        "web_search_requests",
        "cacheDetails",
        "prompt_cache_hit_tokens",
        '"inference_geo": "us"',
        '"audio_tokens"',
        '"image_tokens"',
        '"service_tier": "flex"',
        '"service_tier": "priority"',
        '"batch": true',
        "cached_tokens_details",
        "cacheTokensDetails",
        "promptTokensDetails",
        '"web_search_context_size": "low"',
        '"web_search_context_size": "high"',
        "billed per request",
        "billed per query",
    ):
        assert needle in text, needle
    names = " ".join(case["name"] for case in CORPUS)
    assert "above 272k" in names and "above 200k" in names and "exactly 272k" in names


def test_tollgate_costs_equal_litellms(api, org, key, litellm_costs):
    call_command("load_prices", str(PARITY / "prices.json"), stdout=open(os.devnull, "w"))

    response = api.post(
        "/v1/events",
        json={"events": [_event(i, case) for i, case in enumerate(CORPUS)]},
        headers=auth(key),
    )

    assert response.status_code == 201, response.text
    results = response.json()["results"]
    differences = {}
    for case, result in zip(CORPUS, results, strict=True):
        assert result["priced"] is True, case["name"]
        ours, theirs = Decimal(result["cost_usd"]), litellm_costs[case["name"]]
        if abs(ours - theirs) > TOLERANCE:
            differences[case["name"]] = (str(ours), str(theirs))
    assert not differences, json.dumps(differences, indent=1)
    # The corpus is not trivially zero: every case costs something.
    assert all(Decimal(r["cost_usd"]) > 0 for r in results)
