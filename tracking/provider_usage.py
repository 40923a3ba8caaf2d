"""Provider usage → disjoint token buckets.

Each provider counts tokens its own way; pricing needs buckets that do not
overlap, or a token is billed twice:

- OpenAI Chat Completions: `prompt_tokens` include `prompt_tokens_details.cached_tokens`
  (and its `audio_tokens` / `image_tokens`); `completion_tokens` include
  `completion_tokens_details.reasoning_tokens` (and its `audio_tokens` / `image_tokens`).
  DeepSeek's `prompt_cache_hit_tokens` stand for `cached_tokens` when those are absent.
  xAI counts `reasoning_tokens` outside `completion_tokens` (its `total_tokens`
  then equals prompt + completion + reasoning), everyone else inside.
- OpenAI Responses / Realtime: `input_tokens` include `input_tokens_details.cached_tokens`;
  `output_tokens` include `output_tokens_details.reasoning_tokens` (Realtime names
  them `input_token_details` / `output_token_details`).
- OpenAI's `audio_tokens` / `image_tokens` of the input count cached ones too;
  `cached_tokens_details` (Realtime) says which cached tokens were audio or image.
- Anthropic Messages: `input_tokens` exclude `cache_read_input_tokens` and
  `cache_creation_input_tokens` (split by `cache_creation.ephemeral_1h_input_tokens`
  / `ephemeral_5m_input_tokens`); thinking is inside `output_tokens`; paid web
  searches are `server_tool_use.web_search_requests`.
- Gemini `usageMetadata`: `promptTokenCount` includes `cachedContentTokenCount`;
  `thoughtsTokenCount` is outside `candidatesTokenCount`; tool-use prompt tokens
  are input too (not when the request was grounded with Google Search).
  `promptTokensDetails`, `cacheTokensDetails` and `candidatesTokensDetails` list
  the tokens by modality (the prompt's include the cached ones).
- Bedrock Converse: `inputTokens` exclude `cacheReadInputTokens` and
  `cacheWriteInputTokens` (split by TTL in `cacheDetails`); `outputTokens`.
- Normalized: already disjoint buckets.

The five buckets (uncached input, cache read, cache write, output, reasoning)
are disjoint. The other counts are the part of one bucket that has a price of
its own: `cache_write_1h_tokens` of `cache_write_tokens`, `cache_read_audio_tokens`
of `cache_read_tokens`, `input_audio_tokens`
and `input_image_tokens` of `input_tokens`, `output_audio_tokens` and
`output_image_tokens` of `output_tokens`; `web_search_calls` counts paid
searches, not tokens. Pricing bills each token once: a part at its own rate,
the rest of its bucket at the bucket's (budgets/sql/functions/20_pricing.sql).
Fields that are not priced (accepted predictions, tool-use details, ...) are
ignored.

Paid web searches the usage object does not count (OpenAI's, Gemini's
grounding) and their search context size come beside it on the event
(`web_searches`).

The shape is recognised by its keys. Bad values raise ApiError naming the
field (`usage.prompt_tokens`), so the whole batch is rejected with a 422.
"""

from __future__ import annotations

from typing import Any, TypedDict

from config.hotpath.errors import invalid

MAX_TOKENS = 10**12
# Paid tool calls of one request: more than this is not a usage report.
MAX_CALLS = 10**6


class Buckets(TypedDict):
    input_tokens: int  # uncached input
    cache_read_tokens: int
    cache_write_tokens: int
    output_tokens: int  # output without reasoning
    reasoning_tokens: int
    # Parts of the buckets above with a price of their own.
    cache_write_1h_tokens: int
    cache_read_audio_tokens: int
    input_audio_tokens: int
    input_image_tokens: int
    output_audio_tokens: int
    output_image_tokens: int
    web_search_calls: int


# The parts, and the bucket each is part of.
PARTS = {
    "cache_write_1h_tokens": "cache_write_tokens",
    "cache_read_audio_tokens": "cache_read_tokens",
    "input_audio_tokens": "input_tokens",
    "input_image_tokens": "input_tokens",
    "output_audio_tokens": "output_tokens",
    "output_image_tokens": "output_tokens",
}
EXTRA = (*PARTS, "web_search_calls")

ZERO: Buckets = {
    "input_tokens": 0,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "output_tokens": 0,
    "reasoning_tokens": 0,
    "cache_write_1h_tokens": 0,
    "cache_read_audio_tokens": 0,
    "input_audio_tokens": 0,
    "input_image_tokens": 0,
    "output_audio_tokens": 0,
    "output_image_tokens": 0,
    "web_search_calls": 0,
}

OPENAI_CHAT = {"prompt_tokens", "completion_tokens"}
OPENAI_RESPONSES = {"input_tokens_details", "output_tokens_details"}
OPENAI_REALTIME = {"input_token_details", "output_token_details"}
ANTHROPIC = {"cache_creation_input_tokens", "cache_read_input_tokens", "server_tool_use"}
GEMINI = {
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
    "promptTokensDetails",
    "candidatesTokensDetails",
    "cacheTokensDetails",
}
BEDROCK = {"inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"}
NORMALIZED = {"cache_read_tokens", "cache_write_tokens", "reasoning_tokens", *EXTRA}
PLAIN = {"input_tokens", "output_tokens"}


def _count(data: dict[str, Any], key: str, path: str, high: int = MAX_TOKENS) -> int:
    value = data.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{path}.{key}", f"'{path}.{key}' must be a whole number.")
    if not 0 <= value <= high:
        raise invalid(f"{path}.{key}", f"'{path}.{key}' must be between 0 and {high}.")
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


def _buckets(**counts: int) -> Buckets:
    return {**ZERO, **counts}  # type: ignore[typeddict-item]


def normalize(usage: Any, path: str = "usage", *, grounded: bool = False) -> Buckets:
    """Split `usage` (any shape of API.md) into disjoint buckets. `grounded`:
    the request searched the web (the event's `web_search_calls`), which
    changes what Gemini bills."""
    if usage is None:
        return _buckets()
    if not isinstance(usage, dict):
        raise invalid(path, f"'{path}' must be an object.")
    keys = usage.keys()
    if keys & OPENAI_CHAT:
        return _openai_chat(usage, path)
    if keys & GEMINI:
        return _gemini(usage, path, grounded)
    if keys & BEDROCK:
        return _bedrock(usage, path)
    # Anthropic before OpenAI Responses: Anthropic's usage now carries
    # `output_tokens_details` too (its thinking tokens), and only Anthropic
    # has the cache keys, whose tokens OpenAI's shape would not bill.
    if keys & ANTHROPIC:
        return _anthropic(usage, path)
    if keys & OPENAI_RESPONSES:
        return _openai_responses(usage, path)
    if keys & OPENAI_REALTIME:
        return _openai(
            usage,
            path,
            ("input_tokens", "input_token_details"),
            ("output_tokens", "output_token_details"),
        )
    if keys & (NORMALIZED | PLAIN):
        return _normalized(usage, path)
    if not usage:
        return _buckets()
    first = sorted(keys)[0]
    raise invalid(
        f"{path}.{first}",
        f"Unrecognised usage field '{path}.{first}': send the provider's usage object "
        "(OpenAI, Anthropic, Gemini, Bedrock Converse) or the normalized buckets.",
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
    """OpenAI's APIs and those that copy them: cached tokens are inside the
    input count, reasoning tokens inside the output count (xAI's outside);
    audio and image tokens are inside their side's count, cached ones
    included (`cached_tokens_details` splits those; without it cached tokens
    are taken to be text)."""
    (in_key, in_name), (out_key, out_name) = inputs, outputs
    in_path, out_path = f"{path}.{in_name}", f"{path}.{out_name}"
    given_in = _count(usage, in_key, path)
    given_out = _count(usage, out_key, path)
    in_details = _details(usage, in_name, path)
    out_details = _details(usage, out_name, path)
    if in_details.get("cached_tokens") is None and "prompt_cache_hit_tokens" in usage:
        # DeepSeek: prompt_tokens = hit + miss.
        cached = _count(usage, "prompt_cache_hit_tokens", path)
        cached_field = f"{path}.prompt_cache_hit_tokens"
    else:
        cached = _count(in_details, "cached_tokens", in_path)
        cached_field = f"{in_path}.cached_tokens"
    reasoning = _count(out_details, "reasoning_tokens", out_path)
    total = usage.get("total_tokens")
    if (
        reasoning
        and isinstance(total, int)
        and total != given_in + given_out
        and total == given_in + given_out + reasoning
    ):
        # xAI: reasoning is billed as output but counted beside completion_tokens.
        given_out += reasoning
    uncached = _part(given_in, cached, f"{path}.{in_key}", cached_field)
    cached_path = f"{in_path}.cached_tokens_details"
    cached_details = _details(in_details, "cached_tokens_details", in_path)
    cached_audio = _count(cached_details, "audio_tokens", cached_path)
    cached_image = _count(cached_details, "image_tokens", cached_path)
    _part(cached, cached_audio + cached_image, cached_field, f"{cached_path}.audio_tokens")
    # What is left of each modality once its cached tokens are taken out (as
    # LiteLLM does, none when a count says fewer than were cached).
    audio_in = max(_count(in_details, "audio_tokens", in_path) - cached_audio, 0)
    image_in = max(_count(in_details, "image_tokens", in_path) - cached_image, 0)
    _part(uncached, audio_in + image_in, f"{path}.{in_key}", f"{in_path}.audio_tokens")
    output = _part(given_out, reasoning, f"{path}.{out_key}", f"{out_path}.reasoning_tokens")
    audio_out = _count(out_details, "audio_tokens", out_path)
    image_out = _count(out_details, "image_tokens", out_path)
    _part(output, audio_out + image_out, f"{path}.{out_key}", f"{out_path}.audio_tokens")
    return _buckets(
        input_tokens=uncached,
        cache_read_tokens=cached,
        output_tokens=output,
        reasoning_tokens=reasoning,
        cache_read_audio_tokens=cached_audio,
        input_audio_tokens=audio_in,
        input_image_tokens=image_in,
        output_audio_tokens=audio_out,
        output_image_tokens=image_out,
    )


def _anthropic(usage: dict[str, Any], path: str) -> Buckets:
    written = _count(usage, "cache_creation_input_tokens", path)
    ttl_path = f"{path}.cache_creation"
    by_ttl = _details(usage, "cache_creation", path)
    one_hour = _count(by_ttl, "ephemeral_1h_input_tokens", ttl_path)
    if by_ttl and not written:
        # Some gateways send only the split.
        written = one_hour + _count(by_ttl, "ephemeral_5m_input_tokens", ttl_path)
    _part(
        written,
        one_hour,
        f"{path}.cache_creation_input_tokens",
        f"{ttl_path}.ephemeral_1h_input_tokens",
    )
    tools = _details(usage, "server_tool_use", path)
    return _buckets(
        input_tokens=_count(usage, "input_tokens", path),
        cache_read_tokens=_count(usage, "cache_read_input_tokens", path),
        cache_write_tokens=written,
        output_tokens=_count(usage, "output_tokens", path),
        cache_write_1h_tokens=one_hour,
        web_search_calls=_count(
            tools, "web_search_requests", f"{path}.server_tool_use", high=MAX_CALLS
        ),
    )


def _gemini(usage: dict[str, Any], path: str, grounded: bool) -> Buckets:
    prompt = _count(usage, "promptTokenCount", path)
    cached = _count(usage, "cachedContentTokenCount", path)
    tool_use = _count(usage, "toolUsePromptTokenCount", path)
    if grounded:
        # Google bills grounding with Google Search per request or query and
        # not the search results it adds to the prompt
        # (https://ai.google.dev/gemini-api/docs/pricing); other tools' tokens
        # (URL context, code execution) are input.
        tool_use = 0
    uncached = (
        _part(prompt, cached, f"{path}.promptTokenCount", f"{path}.cachedContentTokenCount")
        + tool_use
    )
    output = _count(usage, "candidatesTokenCount", path)
    prompt_by = _modalities(usage, "promptTokensDetails", path)
    cached_by = _modalities(usage, "cacheTokensDetails", path)
    output_by = _modalities(usage, "candidatesTokensDetails", path)
    cached_audio = cached_by["AUDIO"]
    _part(cached, cached_audio, f"{path}.cachedContentTokenCount", f"{path}.cacheTokensDetails")
    audio_in = max(prompt_by["AUDIO"] - cached_audio, 0)
    image_in = max(prompt_by["IMAGE"] - cached_by["IMAGE"], 0)
    _part(uncached, audio_in + image_in, f"{path}.promptTokenCount", f"{path}.promptTokensDetails")
    _part(
        output,
        output_by["AUDIO"] + output_by["IMAGE"],
        f"{path}.candidatesTokenCount",
        f"{path}.candidatesTokensDetails",
    )
    return _buckets(
        input_tokens=uncached,
        cache_read_tokens=cached,
        output_tokens=output,
        reasoning_tokens=_count(usage, "thoughtsTokenCount", path),
        cache_read_audio_tokens=cached_audio,
        input_audio_tokens=audio_in,
        input_image_tokens=image_in,
        output_audio_tokens=output_by["AUDIO"],
        output_image_tokens=output_by["IMAGE"],
    )


def _modalities(usage: dict[str, Any], key: str, path: str) -> dict[str, int]:
    """Gemini's tokens by modality: `[{"modality": "AUDIO", "tokenCount": N}, ...]`
    summed by modality (TEXT, AUDIO, IMAGE, VIDEO, DOCUMENT; others ignored)."""
    totals = dict.fromkeys(("TEXT", "AUDIO", "IMAGE", "VIDEO", "DOCUMENT"), 0)
    entries = usage.get(key)
    if entries is None:
        return totals
    if not isinstance(entries, list):
        raise invalid(f"{path}.{key}", f"'{path}.{key}' must be a list.")
    for index, entry in enumerate(entries):
        where = f"{path}.{key}[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("modality", ""), str):
            raise invalid(where, f"'{where}' must be an object with a modality.")
        modality = entry.get("modality", "").upper()
        if modality in totals:
            totals[modality] += _count(entry, "tokenCount", where)
    return totals


def _bedrock(usage: dict[str, Any], path: str) -> Buckets:
    """Bedrock Converse: input excludes cache reads and writes; `cacheDetails`
    lists the writes by TTL (`[{"ttl": "1h", "inputTokens": N}, ...]`)."""
    written = _count(usage, "cacheWriteInputTokens", path)
    one_hour = 0
    details = usage.get("cacheDetails")
    if details is not None:
        if not isinstance(details, list):
            raise invalid(f"{path}.cacheDetails", f"'{path}.cacheDetails' must be a list.")
        for index, entry in enumerate(details):
            where = f"{path}.cacheDetails[{index}]"
            if not isinstance(entry, dict):
                raise invalid(where, f"'{where}' must be an object.")
            ttl = entry.get("ttl")
            if ttl not in ("5m", "1h"):
                raise invalid(f"{where}.ttl", f"'{where}.ttl' must be '5m' or '1h'.")
            if ttl == "1h":
                one_hour += _count(entry, "inputTokens", where)
    _part(written, one_hour, f"{path}.cacheWriteInputTokens", f"{path}.cacheDetails")
    return _buckets(
        input_tokens=_count(usage, "inputTokens", path),
        cache_read_tokens=_count(usage, "cacheReadInputTokens", path),
        cache_write_tokens=written,
        output_tokens=_count(usage, "outputTokens", path),
        cache_write_1h_tokens=one_hour,
    )


def _normalized(usage: dict[str, Any], path: str) -> Buckets:
    buckets = _buckets(
        **{key: _count(usage, key, path) for key in ZERO if key != "web_search_calls"},
        web_search_calls=_count(usage, "web_search_calls", path, high=MAX_CALLS),
    )
    _part(
        buckets["input_tokens"],
        buckets["input_audio_tokens"] + buckets["input_image_tokens"],
        f"{path}.input_tokens",
        f"{path}.input_audio_tokens",
    )
    _part(
        buckets["output_tokens"],
        buckets["output_audio_tokens"] + buckets["output_image_tokens"],
        f"{path}.output_tokens",
        f"{path}.output_audio_tokens",
    )
    _part(
        buckets["cache_write_tokens"],
        buckets["cache_write_1h_tokens"],
        f"{path}.cache_write_tokens",
        f"{path}.cache_write_1h_tokens",
    )
    _part(
        buckets["cache_read_tokens"],
        buckets["cache_read_audio_tokens"],
        f"{path}.cache_read_tokens",
        f"{path}.cache_read_audio_tokens",
    )
    return buckets


# The search context sizes a request may ask for (OpenAI's
# `web_search_options.search_context_size`, the `search_context_size` of a
# Responses `web_search` tool); "medium" is the default and stored as "".
SEARCH_CONTEXT_SIZES = ("low", "medium", "high")


def web_searches(event: dict[str, Any], counted: int, prefix: str = "") -> tuple[int, str]:
    """The paid web searches of an event and their search context size.

    `counted` is what its usage object reported (Anthropic's
    `server_tool_use.web_search_requests`); the event's own `web_search_calls`
    counts those the usage does not (OpenAI: one per `web_search_call` item of a
    Responses output, one for a Chat Completion that searched; Gemini: the
    queries of `groundingMetadata.webSearchQueries`). Both may be sent when
    they agree. The size: '' for medium (the default), 'low' or 'high'."""
    calls_field, size_field = f"{prefix}web_search_calls", f"{prefix}web_search_context_size"
    calls = event.get("web_search_calls") or 0
    if isinstance(calls, bool) or not isinstance(calls, int) or not 0 <= calls <= MAX_CALLS:
        raise invalid(calls_field, f"'{calls_field}' must be a whole number 0 to {MAX_CALLS}.")
    if calls and counted and calls != counted:
        raise invalid(
            calls_field,
            f"'{calls_field}' ({calls}) differs from the searches the usage reports ({counted}).",
        )
    size = event.get("web_search_context_size")
    if size is None:
        size = ""
    elif not isinstance(size, str) or size.lower() not in SEARCH_CONTEXT_SIZES:
        raise invalid(size_field, f"'{size_field}' must be one of low, medium, high.")
    else:
        size = "" if size.lower() == "medium" else size.lower()
    return calls or counted, size
