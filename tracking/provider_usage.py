"""Provider usage → disjoint token buckets.

Each provider counts tokens its own way; pricing needs buckets that do not
overlap, or a token is billed twice:

- OpenAI Chat Completions: `prompt_tokens` include `prompt_tokens_details.cached_tokens`;
  `completion_tokens` include `completion_tokens_details.reasoning_tokens`.
- OpenAI Responses: `input_tokens` include `input_tokens_details.cached_tokens`;
  `output_tokens` include `output_tokens_details.reasoning_tokens`.
- Anthropic Messages: `input_tokens` exclude `cache_read_input_tokens` and
  `cache_creation_input_tokens`; thinking is inside `output_tokens`.
- Gemini `usageMetadata`: `promptTokenCount` includes `cachedContentTokenCount`;
  `thoughtsTokenCount` is outside `candidatesTokenCount`; tool-use prompt tokens
  are input too.
- Normalized: already disjoint buckets.

The shape is recognised by its keys. Bad values raise ApiError naming the
field (`usage.prompt_tokens`), so the whole batch is rejected with a 422.
"""

from __future__ import annotations

from typing import Any, TypedDict

from config.hotpath.errors import invalid

MAX_TOKENS = 10**12


class Buckets(TypedDict):
    input_tokens: int  # uncached input
    cache_read_tokens: int
    cache_write_tokens: int
    output_tokens: int  # output without reasoning
    reasoning_tokens: int


ZERO: Buckets = {
    "input_tokens": 0,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "output_tokens": 0,
    "reasoning_tokens": 0,
}

OPENAI_CHAT = {"prompt_tokens", "completion_tokens"}
OPENAI_RESPONSES = {"input_tokens_details", "output_tokens_details"}
ANTHROPIC = {"cache_creation_input_tokens", "cache_read_input_tokens"}
GEMINI = {
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
}
NORMALIZED = {"cache_read_tokens", "cache_write_tokens", "reasoning_tokens"}
PLAIN = {"input_tokens", "output_tokens"}


def _count(data: dict[str, Any], key: str, path: str) -> int:
    value = data.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{path}.{key}", f"'{path}.{key}' must be a whole number of tokens.")
    if not 0 <= value <= MAX_TOKENS:
        raise invalid(f"{path}.{key}", f"'{path}.{key}' must be between 0 and {MAX_TOKENS}.")
    return value


def _details(data: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{path}.{key}", f"'{path}.{key}' must be an object.")
    return value


def _part(total: int, part: int, total_field: str, part_field: str) -> int:
    if part > total:
        raise invalid(
            part_field, f"'{part_field}' ({part}) cannot exceed '{total_field}' ({total})."
        )
    return total - part


def normalize(usage: Any, path: str = "usage") -> Buckets:
    """Split `usage` (any shape of API.md) into disjoint buckets."""
    if usage is None:
        return dict(ZERO)  # type: ignore[return-value]
    if not isinstance(usage, dict):
        raise invalid(path, f"'{path}' must be an object.")
    keys = usage.keys()
    if keys & OPENAI_CHAT:
        return _openai_chat(usage, path)
    if keys & GEMINI:
        return _gemini(usage, path)
    # Anthropic before OpenAI Responses: Anthropic's usage now carries
    # `output_tokens_details` too (its thinking tokens), and only Anthropic
    # has the cache keys, whose tokens OpenAI's shape would not bill.
    if keys & ANTHROPIC:
        return _anthropic(usage, path)
    if keys & OPENAI_RESPONSES:
        return _openai_responses(usage, path)
    if keys & (NORMALIZED | PLAIN):
        return _normalized(usage, path)
    if not usage:
        return dict(ZERO)  # type: ignore[return-value]
    first = sorted(keys)[0]
    raise invalid(
        f"{path}.{first}",
        f"Unrecognised usage field '{path}.{first}': send the "
        "provider's usage object (OpenAI, Anthropic, Gemini) or the normalized buckets.",
    )


def _openai_chat(usage: dict[str, Any], path: str) -> Buckets:
    return _openai(
        usage,
        path,
        ("prompt_tokens", "prompt_tokens_details"),
        ("completion_tokens", "completion_tokens_details"),
    )


def _openai_responses(usage: dict[str, Any], path: str) -> Buckets:
    return _openai(
        usage,
        path,
        ("input_tokens", "input_tokens_details"),
        ("output_tokens", "output_tokens_details"),
    )


def _openai(
    usage: dict[str, Any], path: str, inputs: tuple[str, str], outputs: tuple[str, str]
) -> Buckets:
    """Both OpenAI APIs: cached tokens are inside the input count, reasoning
    tokens inside the output count; only the key names differ."""
    (in_key, in_details), (out_key, out_details) = inputs, outputs
    given_in = _count(usage, in_key, path)
    given_out = _count(usage, out_key, path)
    cached = _count(_details(usage, in_details, path), "cached_tokens", f"{path}.{in_details}")
    reasoning = _count(
        _details(usage, out_details, path), "reasoning_tokens", f"{path}.{out_details}"
    )
    return {
        "input_tokens": _part(
            given_in, cached, f"{path}.{in_key}", f"{path}.{in_details}.cached_tokens"
        ),
        "cache_read_tokens": cached,
        "cache_write_tokens": 0,
        "output_tokens": _part(
            given_out, reasoning, f"{path}.{out_key}", f"{path}.{out_details}.reasoning_tokens"
        ),
        "reasoning_tokens": reasoning,
    }


def _anthropic(usage: dict[str, Any], path: str) -> Buckets:
    return {
        "input_tokens": _count(usage, "input_tokens", path),
        "cache_read_tokens": _count(usage, "cache_read_input_tokens", path),
        "cache_write_tokens": _count(usage, "cache_creation_input_tokens", path),
        "output_tokens": _count(usage, "output_tokens", path),
        "reasoning_tokens": 0,
    }


def _gemini(usage: dict[str, Any], path: str) -> Buckets:
    prompt = _count(usage, "promptTokenCount", path)
    cached = _count(usage, "cachedContentTokenCount", path)
    return {
        "input_tokens": _part(
            prompt, cached, f"{path}.promptTokenCount", f"{path}.cachedContentTokenCount"
        )
        + _count(usage, "toolUsePromptTokenCount", path),
        "cache_read_tokens": cached,
        "cache_write_tokens": 0,
        "output_tokens": _count(usage, "candidatesTokenCount", path),
        "reasoning_tokens": _count(usage, "thoughtsTokenCount", path),
    }


def _normalized(usage: dict[str, Any], path: str) -> Buckets:
    return {
        "input_tokens": _count(usage, "input_tokens", path),
        "cache_read_tokens": _count(usage, "cache_read_tokens", path),
        "cache_write_tokens": _count(usage, "cache_write_tokens", path),
        "output_tokens": _count(usage, "output_tokens", path),
        "reasoning_tokens": _count(usage, "reasoning_tokens", path),
    }
