"""Provider usage as Tollgate's events take it.

`from_response` accepts a response object of the official OpenAI, Anthropic or
Google Gen AI SDKs, such a response as a plain dict, or a usage object/dict on
its own, and returns the provider's usage dict unchanged in meaning: Tollgate
recognises the OpenAI (Chat Completions and Responses), Anthropic and Gemini
shapes by their keys and splits them into disjoint token buckets itself
(docs/api.md), so no token counting rule is repeated here. The one rewrite is
Gemini's: the Python SDK names the fields in snake_case, the API (and
Tollgate) in camelCase.
"""

from __future__ import annotations

from typing import Any

# Google Gen AI SDK (snake_case) -> Gemini API (camelCase), as Tollgate reads them.
_GEMINI_FIELDS = {
    "prompt_token_count": "promptTokenCount",
    "cached_content_token_count": "cachedContentTokenCount",
    "candidates_token_count": "candidatesTokenCount",
    "thoughts_token_count": "thoughtsTokenCount",
    "tool_use_prompt_token_count": "toolUsePromptTokenCount",
    "total_token_count": "totalTokenCount",
}
_USAGE_KEYS = ("usage", "usageMetadata", "usage_metadata")


def from_response(obj: Any) -> dict[str, Any]:
    """The usage of a provider response (object or dict), or of a usage object.

    Raises ValueError when `obj` carries no usage at all (a response without
    usage must not be recorded as free).
    """
    data = _plain(obj)
    if not isinstance(data, dict):
        raise ValueError(f"not a response or usage object: {type(obj).__name__}")
    for key in _USAGE_KEYS:
        if key in data:
            usage = data[key]
            if usage is None:
                raise ValueError(f"the response's '{key}' is empty")
            return _as_usage(_plain(usage))
    return _as_usage(data)


def _as_usage(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("usage is not an object")
    usage = _without_none(data)
    if any(key in usage for key in _GEMINI_FIELDS):
        usage = {_GEMINI_FIELDS.get(key, key): value for key, value in usage.items()}
    if not usage:
        raise ValueError("the usage object is empty")
    return usage


def _plain(obj: Any) -> Any:
    """Pydantic models (OpenAI, Anthropic, Google SDKs) and plain objects as dicts."""
    if obj is None or isinstance(obj, dict | list | str | int | float | bool):
        return obj
    model_dump = getattr(obj, "model_dump", None)
    if callable(model_dump):
        try:
            return model_dump(exclude_none=True)
        except TypeError:
            return model_dump()
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return obj


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in data.items():
        value = _plain(value)
        if isinstance(value, dict):
            value = _without_none(value)
        if value is not None:
            clean[key] = value
    return clean


def merge(first: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """`first` updated by the counts of `later` (a stream's running usage:
    Anthropic's `message_start` usage, then each `message_delta`'s)."""
    merged = dict(first)
    merged.update(later)
    return merged
