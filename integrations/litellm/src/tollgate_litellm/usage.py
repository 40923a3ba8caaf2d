"""LiteLLM's usage → Tollgate's normalized token buckets.

LiteLLM reports every provider in OpenAI's convention: `prompt_tokens`
include the cached tokens (`prompt_tokens_details.cached_tokens`, or
`cache_read_input_tokens`) and, for Anthropic, the cache writes
(`cache_creation_input_tokens`); `completion_tokens` include
`completion_tokens_details.reasoning_tokens`. Its usage object also carries
Anthropic's cache keys (often 0), by which Tollgate would read it as
Anthropic's shape, where `prompt_tokens` mean nothing. So the adapter sends
Tollgate's normalized shape: disjoint buckets, no key left to guess from.
"""

from __future__ import annotations

from typing import Any


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _count(obj: Any, key: str) -> int:
    value = _get(obj, key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def normalized(usage: Any) -> dict[str, int]:
    """Disjoint buckets from a LiteLLM `Usage` (object or dict).

    Raises ValueError when it has no token counts (a call without usage must
    not be recorded as free).
    """
    if usage is None or (
        _get(usage, "prompt_tokens") is None and _get(usage, "completion_tokens") is None
    ):
        raise ValueError("LiteLLM reported no usage for this call")
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    prompt_details = _get(usage, "prompt_tokens_details")
    cache_read = _count(prompt_details, "cached_tokens") or _count(usage, "cache_read_input_tokens")
    cache_write = _count(usage, "cache_creation_input_tokens") or _count(
        prompt_details, "cache_creation_tokens"
    )
    reasoning = min(
        _count(_get(usage, "completion_tokens_details"), "reasoning_tokens"), completion
    )
    cache_read = min(cache_read, prompt)
    cache_write = min(cache_write, prompt - cache_read)
    return {
        "input_tokens": prompt - cache_read - cache_write,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "output_tokens": completion - reasoning,
        "reasoning_tokens": reasoning,
    }
