"""tracking.provider_usage.normalize: every provider's usage object becomes five
disjoint buckets (uncached input, cache read, cache write, output without
reasoning, reasoning), and a bad count is a 422 naming the field."""

from __future__ import annotations

from decimal import Decimal

import pytest

from config.hotpath.errors import ApiError
from tracking.provider_usage import MAX_TOKENS, ZERO, normalize


def buckets(
    input: int = 0,
    cache_read: int = 0,
    cache_write: int = 0,
    output: int = 0,
    reasoning: int = 0,
    **parts: int,
) -> dict[str, int]:
    return {
        **ZERO,
        "input_tokens": input,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "output_tokens": output,
        "reasoning_tokens": reasoning,
        **parts,
    }


def rejects(usage: object, path: str = "usage") -> ApiError:
    with pytest.raises(ApiError) as caught:
        normalize(usage, path)
    assert caught.value.status == 422
    assert caught.value.code == "invalid_field"
    return caught.value


# Usage objects as the providers send them, extra keys and all.
OPENAI_CHAT = {
    "prompt_tokens": 1000,
    "completion_tokens": 500,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 200,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
OPENAI_RESPONSES = {
    "input_tokens": 2000,
    "input_tokens_details": {"cached_tokens": 1500},
    "output_tokens": 900,
    "output_tokens_details": {"reasoning_tokens": 600},
    "total_tokens": 2900,
}
ANTHROPIC = {
    "input_tokens": 50,
    "cache_creation_input_tokens": 1000,
    "cache_read_input_tokens": 3000,
    "output_tokens": 200,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
    "server_tool_use": {"web_search_requests": 0},
    "service_tier": "standard",
}
GEMINI = {
    "promptTokenCount": 1200,
    "cachedContentTokenCount": 1000,
    "candidatesTokenCount": 300,
    "thoughtsTokenCount": 700,
    "toolUsePromptTokenCount": 50,
    "totalTokenCount": 2250,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1200}],
}


def test_openai_chat_prompt_includes_cached_and_completion_includes_reasoning():
    # 1000 prompt - 400 cached = 600 uncached; 500 completion - 200 reasoning = 300 output.
    assert normalize(OPENAI_CHAT) == buckets(input=600, cache_read=400, output=300, reasoning=200)


def test_openai_chat_without_details_is_all_uncached_output():
    usage = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert normalize(usage) == buckets(input=12, output=7)


def test_openai_chat_details_may_be_null():
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": 7,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    assert normalize(usage) == buckets(input=12, output=7)


def test_openai_responses_input_includes_cached_and_output_includes_reasoning():
    # 2000 input - 1500 cached = 500; 900 output - 600 reasoning = 300.
    assert normalize(OPENAI_RESPONSES) == buckets(
        input=500, cache_read=1500, output=300, reasoning=600
    )


def test_openai_responses_without_details_reads_like_normalized():
    usage = {"input_tokens": 40, "output_tokens": 9, "total_tokens": 49}
    assert normalize(usage) == buckets(input=40, output=9)


def test_anthropic_input_excludes_cache_reads_and_writes():
    # Anthropic's input_tokens are already the uncached part: nothing is subtracted.
    assert normalize(ANTHROPIC) == buckets(input=50, cache_read=3000, cache_write=1000, output=200)


def test_anthropic_with_output_details_still_bills_its_cache():
    # The Anthropic SDK's Usage has `output_tokens_details` (thinking tokens,
    # inside output_tokens), a key OpenAI's Responses usage has too.
    usage = {
        "input_tokens": 50,
        "cache_read_input_tokens": 800,
        "cache_creation_input_tokens": 100,
        "output_tokens": 300,
        "output_tokens_details": {"thinking_tokens": 200},
    }
    assert normalize(usage) == buckets(input=50, cache_read=800, cache_write=100, output=300)


def test_anthropic_with_only_cache_reads():
    usage = {"input_tokens": 3, "cache_read_input_tokens": 9000, "output_tokens": 1}
    assert normalize(usage) == buckets(input=3, cache_read=9000, output=1)


def test_gemini_prompt_includes_cached_and_thoughts_are_outside_candidates():
    # 1200 prompt - 1000 cached + 50 tool-use prompt = 250 uncached input;
    # thoughts (700) are not inside candidates (300), so nothing is subtracted there.
    assert normalize(GEMINI) == buckets(input=250, cache_read=1000, output=300, reasoning=700)


def test_gemini_without_cache_or_thoughts():
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 4, "totalTokenCount": 14}
    assert normalize(usage) == buckets(input=10, output=4)


def test_normalized_buckets_pass_through():
    usage = {
        "input_tokens": 1,
        "cache_read_tokens": 2,
        "cache_write_tokens": 3,
        "output_tokens": 4,
        "reasoning_tokens": 5,
    }
    assert normalize(usage) == buckets(1, 2, 3, 4, 5)


def test_normalized_with_some_buckets_only():
    assert normalize({"reasoning_tokens": 8}) == buckets(reasoning=8)


@pytest.mark.parametrize("usage", [None, {}], ids=["none", "empty"])
def test_no_usage_is_zero_tokens(usage):
    assert normalize(usage) == buckets()


def test_zero_buckets_are_a_fresh_dict_each_time():
    first = normalize(None)
    first["input_tokens"] = 99
    assert normalize(None) == buckets()
    assert normalize({}) == buckets()


def test_null_counts_are_zero():
    usage = {"prompt_tokens": 5, "completion_tokens": None}
    assert normalize(usage) == buckets(input=5)


def test_largest_count_is_accepted():
    assert normalize({"input_tokens": MAX_TOKENS}) == buckets(input=MAX_TOKENS)


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        pytest.param(
            {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}},
            "usage.prompt_tokens_details.cached_tokens",
            id="chat-cached-over-prompt",
        ),
        pytest.param(
            {"completion_tokens": 10, "completion_tokens_details": {"reasoning_tokens": 11}},
            "usage.completion_tokens_details.reasoning_tokens",
            id="chat-reasoning-over-completion",
        ),
        pytest.param(
            {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 11}},
            "usage.input_tokens_details.cached_tokens",
            id="responses-cached-over-input",
        ),
        pytest.param(
            {"output_tokens": 10, "output_tokens_details": {"reasoning_tokens": 11}},
            "usage.output_tokens_details.reasoning_tokens",
            id="responses-reasoning-over-output",
        ),
        pytest.param(
            {"promptTokenCount": 10, "cachedContentTokenCount": 11},
            "usage.cachedContentTokenCount",
            id="gemini-cached-over-prompt",
        ),
    ],
)
def test_a_part_larger_than_its_total_is_rejected(usage, field):
    # Subtracting would give a negative bucket: the usage object is inconsistent.
    assert rejects(usage).field == field


def test_a_part_equal_to_its_total_is_fine():
    usage = {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 10}}
    assert normalize(usage) == buckets(cache_read=10)


BAD_COUNTS = [
    pytest.param(-1, id="negative"),
    pytest.param(1.5, id="float"),
    pytest.param(2.0, id="whole-float"),
    pytest.param(Decimal("3"), id="decimal"),
    pytest.param(True, id="bool"),
    pytest.param("12", id="string"),
    pytest.param([1], id="list"),
    pytest.param(MAX_TOKENS + 1, id="too-large"),
]


@pytest.mark.parametrize("value", BAD_COUNTS)
@pytest.mark.parametrize(
    ("make", "field"),
    [
        pytest.param(lambda v: {"prompt_tokens": v}, "usage.prompt_tokens", id="chat-prompt"),
        pytest.param(
            lambda v: {"prompt_tokens": 5, "completion_tokens": v},
            "usage.completion_tokens",
            id="chat-completion",
        ),
        pytest.param(
            lambda v: {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": v}},
            "usage.prompt_tokens_details.cached_tokens",
            id="chat-cached",
        ),
        pytest.param(
            lambda v: {
                "completion_tokens": 5,
                "completion_tokens_details": {"reasoning_tokens": v},
            },
            "usage.completion_tokens_details.reasoning_tokens",
            id="chat-reasoning",
        ),
        pytest.param(
            lambda v: {"input_tokens": 5, "output_tokens_details": {"reasoning_tokens": v}},
            "usage.output_tokens_details.reasoning_tokens",
            id="responses-reasoning",
        ),
        pytest.param(
            lambda v: {"input_tokens": 5, "cache_read_input_tokens": v},
            "usage.cache_read_input_tokens",
            id="anthropic-cache-read",
        ),
        pytest.param(
            lambda v: {"cache_creation_input_tokens": 5, "input_tokens": v},
            "usage.input_tokens",
            id="anthropic-input",
        ),
        pytest.param(
            lambda v: {"promptTokenCount": 5, "thoughtsTokenCount": v},
            "usage.thoughtsTokenCount",
            id="gemini-thoughts",
        ),
        pytest.param(
            lambda v: {"promptTokenCount": 5, "toolUsePromptTokenCount": v},
            "usage.toolUsePromptTokenCount",
            id="gemini-tool-use",
        ),
        pytest.param(
            lambda v: {"input_tokens": 5, "cache_write_tokens": v},
            "usage.cache_write_tokens",
            id="normalized-cache-write",
        ),
        pytest.param(lambda v: {"output_tokens": v}, "usage.output_tokens", id="normalized-output"),
    ],
)
def test_bad_count_is_rejected_naming_the_field(make, field, value):
    assert rejects(make(value)).field == field


def test_field_names_carry_the_events_path():
    error = rejects({"prompt_tokens": -1}, "events[3].usage")
    assert error.field == "events[3].usage.prompt_tokens"
    assert "events[3].usage.prompt_tokens" in error.message


def test_unknown_shape_names_its_field():
    error = rejects({"foo": 1})
    assert error.field == "usage.foo"


def test_unknown_shape_in_a_batch_names_the_event():
    assert rejects({"tokens": 5}, "events[0].usage").field == "events[0].usage.tokens"


@pytest.mark.parametrize("usage", [[], "lots", 5, True], ids=["list", "string", "int", "bool"])
def test_usage_must_be_an_object(usage):
    assert rejects(usage).field == "usage"


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        ({"prompt_tokens": 5, "prompt_tokens_details": 3}, "usage.prompt_tokens_details"),
        ({"input_tokens": 5, "input_tokens_details": []}, "usage.input_tokens_details"),
    ],
)
def test_details_must_be_objects(usage, field):
    assert rejects(usage).field == field


def test_openai_realtime_splits_cached_audio_from_cached_text():
    usage = {
        "total_tokens": 7500,
        "input_tokens": 6000,
        "output_tokens": 1500,
        "input_token_details": {
            "cached_tokens": 3000,
            "text_tokens": 2500,
            "audio_tokens": 3500,
            "cached_tokens_details": {"text_tokens": 1000, "audio_tokens": 2000},
        },
        "output_token_details": {"text_tokens": 300, "audio_tokens": 1200},
    }
    # Audio counts the cached audio too: 3500 - 2000 are uncached.
    assert normalize(usage) == buckets(
        input=3000,
        cache_read=3000,
        output=1500,
        cache_read_audio_tokens=2000,
        input_audio_tokens=1500,
        output_audio_tokens=1200,
    )


def test_gemini_modalities_split_audio_and_cached_audio():
    usage = {
        "promptTokenCount": 8000,
        "cachedContentTokenCount": 4000,
        "candidatesTokenCount": 400,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 3000},
            {"modality": "AUDIO", "tokenCount": 5000},
        ],
        "cacheTokensDetails": [
            {"modality": "TEXT", "tokenCount": 1000},
            {"modality": "AUDIO", "tokenCount": 3000},
        ],
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 400}],
    }
    assert normalize(usage) == buckets(
        input=4000,
        cache_read=4000,
        output=400,
        cache_read_audio_tokens=3000,
        input_audio_tokens=2000,
    )


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        (
            {
                "input_tokens": 10,
                "output_tokens": 1,
                "input_token_details": {
                    "cached_tokens": 5,
                    "cached_tokens_details": {"audio_tokens": 6},
                },
            },
            "usage.input_token_details.cached_tokens_details.audio_tokens",
        ),
        (
            {"promptTokenCount": 10, "cachedContentTokenCount": 2, "cacheTokensDetails": {}},
            "usage.cacheTokensDetails",
        ),
        (
            {
                "promptTokenCount": 10,
                "cachedContentTokenCount": 2,
                "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 3}],
            },
            "usage.cacheTokensDetails",
        ),
        (
            {
                "promptTokenCount": 10,
                "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": -1}],
            },
            "usage.promptTokensDetails[0].tokenCount",
        ),
        (
            {"promptTokenCount": 10, "promptTokensDetails": ["AUDIO"]},
            "usage.promptTokensDetails[0]",
        ),
        (
            {"cache_read_tokens": 5, "cache_read_audio_tokens": 6},
            "usage.cache_read_audio_tokens",
        ),
    ],
)
def test_bad_modality_counts_are_a_422_naming_the_field(usage, field):
    assert rejects(usage).field == field
