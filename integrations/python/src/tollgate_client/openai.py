"""Tollgate around the official `openai` SDK.

    from openai import OpenAI
    from tollgate_client import Tollgate
    from tollgate_client.openai import wrap

    client = wrap(OpenAI(), Tollgate(url, key), team="search", user="alice")
    client.chat.completions.create(model="gpt-4o", messages=[...], max_completion_tokens=500)

Each `chat.completions.create` / `parse` and `responses.create` call is held
before it is sent (the model; `max_completion_tokens`, `max_tokens` or
`max_output_tokens`, times `n`; a rough count of the input) and settled with
the response's `usage`. A refused hold raises `BudgetExceeded` (or
`RequestTooExpensive`) and the call is never sent. Streams are asked for
their usage (`stream_options.include_usage`; the usage-only chunk this adds
is not shown to a caller who did not ask for it) and settle when they end; a
stream closed early, collected unfinished or failing releases its hold. An
`AsyncOpenAI` client takes an `AsyncTollgate`. Everything else of the client
passes through unmetered (`with_raw_response`, `chat.completions.stream`,
the other APIs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from tollgate_client import usage as usage_module
from tollgate_client._wrapping import (
    Context,
    Observer,
    Proxy,
    Settlement,
    call_async,
    call_sync,
    check_flavour,
    input_tokens,
    positive_int,
)
from tollgate_client.aio import AsyncTollgate
from tollgate_client.client import Tollgate
from tollgate_client.types import Estimate

C = TypeVar("C")

# Held for a call that names no output limit (the model may write up to its own).
DEFAULT_MAX_OUTPUT_TOKENS = 4096


def wrap(
    client: C,
    tollgate: Tollgate | AsyncTollgate,
    *,
    team: str | None = None,
    user: str | None = None,
    tags: dict[str, str] | None = None,
    ttl_seconds: int | None = None,
    default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
) -> C:
    """`client` (an `openai.OpenAI` or `AsyncOpenAI`) with its calls held and
    settled in Tollgate, attributed to `team`, `user` and `tags`."""
    completions = client.chat.completions  # type: ignore[attr-defined]
    responses = getattr(client, "responses", None)
    is_async = check_flavour(completions.create, tollgate, "OpenAI")
    context = Context(provider="openai", team=team, user=user, tags=tags, ttl_seconds=ttl_seconds)

    def metered(method: Any, request: Any) -> Any:
        if is_async:
            assert isinstance(tollgate, AsyncTollgate)

            async def async_call(*args: Any, **kwargs: Any) -> Any:
                model, estimate, observe = request(kwargs, default_max_output_tokens)
                return await call_async(
                    tollgate,
                    context,
                    method,
                    args,
                    kwargs,
                    model=model,
                    estimate=estimate,
                    observe=observe,
                )

            return async_call
        assert isinstance(tollgate, Tollgate)

        def sync_call(*args: Any, **kwargs: Any) -> Any:
            model, estimate, observe = request(kwargs, default_max_output_tokens)
            return call_sync(
                tollgate,
                context,
                method,
                args,
                kwargs,
                model=model,
                estimate=estimate,
                observe=observe,
            )

        return sync_call

    completion_overrides = {"create": metered(completions.create, _chat_request)}
    if hasattr(completions, "parse"):
        completion_overrides["parse"] = metered(completions.parse, _chat_request)
    overrides: dict[str, Any] = {"chat": {"completions": completion_overrides}}
    if responses is not None and hasattr(responses, "create"):
        overrides["responses"] = {"create": metered(responses.create, _responses_request)}
    return cast(C, Proxy(client, overrides))


def _chat_request(
    kwargs: dict[str, Any], default_max_output: int
) -> tuple[str | None, Estimate, Observer | None]:
    """The hold's model and estimate, and for a stream its observer (after
    asking the stream for its usage)."""
    max_output = (
        positive_int(kwargs.get("max_completion_tokens"))
        or positive_int(kwargs.get("max_tokens"))
        or default_max_output
    )
    choices = positive_int(kwargs.get("n")) or 1
    estimate: Estimate = {
        "input_tokens": input_tokens(
            kwargs.get("messages"), kwargs.get("tools"), kwargs.get("functions")
        ),
        "max_output_tokens": max_output * choices,
    }
    observe = None
    if kwargs.get("stream") is True:
        options = kwargs.get("stream_options")
        options = dict(options) if isinstance(options, Mapping) else {}
        asked = options.get("include_usage") is True
        options["include_usage"] = True
        kwargs["stream_options"] = options
        observe = _chat_chunk_observer(show_usage_chunk=asked)
    return _model(kwargs), estimate, observe


def _chat_chunk_observer(*, show_usage_chunk: bool) -> Observer:
    def observe(chunk: Any, settlement: Settlement) -> bool:
        usage = getattr(chunk, "usage", None)
        if usage is None:
            return False
        settlement.usage = usage_module.from_response(usage)
        return not show_usage_chunk and not getattr(chunk, "choices", None)

    return observe


def _responses_request(
    kwargs: dict[str, Any], default_max_output: int
) -> tuple[str | None, Estimate, Observer | None]:
    estimate: Estimate = {
        "input_tokens": input_tokens(
            kwargs.get("input"), kwargs.get("instructions"), kwargs.get("tools")
        ),
        "max_output_tokens": positive_int(kwargs.get("max_output_tokens")) or default_max_output,
    }
    observe = _responses_event_observer if kwargs.get("stream") is True else None
    return _model(kwargs), estimate, observe


def _responses_event_observer(event: Any, settlement: Settlement) -> bool:
    """`response.completed` (or `.incomplete`/`.failed`) carries the usage."""
    response = getattr(event, "response", None)
    usage = getattr(response, "usage", None) if response is not None else None
    if usage is not None:
        settlement.usage = usage_module.from_response(usage)
    return False


def _model(kwargs: dict[str, Any]) -> str | None:
    model = kwargs.get("model")
    return model if isinstance(model, str) else None
