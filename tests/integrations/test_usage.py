"""tollgate_client.usage.from_response: provider responses (SDK objects or
dicts) become usage Tollgate reads right, checked against the server's own
normalisation (tracking.provider_usage)."""

from __future__ import annotations

from types import SimpleNamespace

import anthropic.types
import openai.types.chat
import openai.types.responses
import pytest
from tollgate_client.usage import from_response

from tests.integrations.fake_providers import ANTHROPIC_USAGE, OPENAI_USAGE
from tracking.provider_usage import ZERO, normalize


def buckets(input=0, cache_read=0, cache_write=0, output=0, reasoning=0) -> dict[str, int]:
    """The server's normalised usage: these buckets, and none of the counts
    with prices of their own (audio, images, 1-hour cache writes, searches)."""
    return {
        **ZERO,
        "input_tokens": input,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "output_tokens": output,
        "reasoning_tokens": reasoning,
    }


OPENAI_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {**OPENAI_USAGE, "completion_tokens_details": {"reasoning_tokens": 40}},
}
CHAT_BUCKETS = buckets(input=800, cache_read=200, output=60, reasoning=40)
ANTHROPIC_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": ANTHROPIC_USAGE,
}
ANTHROPIC_BUCKETS = buckets(input=50, cache_read=800, cache_write=100, output=300)
GEMINI_REST = {
    "candidates": [],
    "usageMetadata": {
        "promptTokenCount": 1000,
        "cachedContentTokenCount": 400,
        "candidatesTokenCount": 100,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 1130,
    },
}
GEMINI_BUCKETS = buckets(input=600, cache_read=400, output=100, reasoning=30)


@pytest.mark.parametrize(
    "response, expected",
    [
        (openai.types.chat.ChatCompletion.model_validate(OPENAI_CHAT), CHAT_BUCKETS),
        (OPENAI_CHAT, CHAT_BUCKETS),
        (OPENAI_CHAT["usage"], CHAT_BUCKETS),
        (anthropic.types.Message.model_validate(ANTHROPIC_MESSAGE), ANTHROPIC_BUCKETS),
        (ANTHROPIC_MESSAGE, ANTHROPIC_BUCKETS),
        (anthropic.types.Message.model_validate(ANTHROPIC_MESSAGE).usage, ANTHROPIC_BUCKETS),
        (GEMINI_REST, GEMINI_BUCKETS),
        # The google-genai SDK's names (a response object or its dict).
        (
            SimpleNamespace(
                candidates=[],
                usage_metadata=SimpleNamespace(
                    prompt_token_count=1000,
                    cached_content_token_count=400,
                    candidates_token_count=100,
                    thoughts_token_count=30,
                    tool_use_prompt_token_count=None,
                ),
            ),
            GEMINI_BUCKETS,
        ),
        (
            {
                "usage_metadata": {
                    "prompt_token_count": 1000,
                    "cached_content_token_count": 400,
                    "candidates_token_count": 100,
                    "thoughts_token_count": 30,
                }
            },
            GEMINI_BUCKETS,
        ),
    ],
)
def test_responses_are_billed_in_the_right_buckets(response, expected):
    assert normalize(from_response(response)) == expected


def test_openai_responses_api_objects():
    usage = openai.types.responses.ResponseUsage.model_validate(
        {
            "input_tokens": 900,
            "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
            "output_tokens": 50,
            "output_tokens_details": {"reasoning_tokens": 20},
            "total_tokens": 950,
        }
    )
    assert normalize(from_response(usage)) == buckets(
        input=800, cache_read=100, output=30, reasoning=20
    )


@pytest.mark.parametrize("response", [{"usage": None}, {}, SimpleNamespace(usage=None), 42])
def test_a_response_without_usage_is_an_error_not_zero(response):
    with pytest.raises(ValueError):
        from_response(response)
