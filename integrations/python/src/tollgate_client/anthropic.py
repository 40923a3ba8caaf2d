"""Tollgate around the official `anthropic` SDK.

    from anthropic import Anthropic
    from tollgate_client import Tollgate
    from tollgate_client.anthropic import wrap

    client = wrap(Anthropic(), Tollgate(url, key), team="search", user="alice")
    client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, messages=[...])

Each `messages.create` call (streamed or not) and each `messages.stream(...)`
block is held before it is sent (the model, `max_tokens`, a rough count of
the messages, system prompt and tools) and settled with the usage Anthropic
reports: the response's `usage`, or for a stream the `message_start` usage
updated by each `message_delta`. A refused hold raises `BudgetExceeded` (or
`RequestTooExpensive`) and nothing is sent. A stream left early settles what
Anthropic reported so far (its input, counted up front, and the output
until then); one that failed before any usage releases its hold. An
`AsyncAnthropic` client takes an `AsyncTollgate`.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from tollgate_client import usage as usage_module
from tollgate_client._wrapping import (
    Context,
    Proxy,
    Settlement,
    _shielded,
    aabandon,
    abandon,
    call_async,
    call_sync,
    check_flavour,
    input_tokens,
    positive_int,
    release,
)
from tollgate_client._wrapping import arelease as _arelease
from tollgate_client.aio import AsyncTollgate
from tollgate_client.client import Tollgate
from tollgate_client.types import Estimate

C = TypeVar("C")

# Anthropic requires max_tokens; this is only for a call that somehow omits it.
DEFAULT_MAX_OUTPUT_TOKENS = 4096


def wrap(
    client: C,
    tollgate: Tollgate | AsyncTollgate,
    *,
    team: str | None = None,
    user: str | None = None,
    tags: dict[str, str] | None = None,
    ttl_seconds: int | None = None,
) -> C:
    """`client` (an `anthropic.Anthropic` or `AsyncAnthropic`) with its
    message calls held and settled in Tollgate."""
    messages = client.messages  # type: ignore[attr-defined]
    is_async = check_flavour(messages.create, tollgate, "Anthropic")
    context = Context(
        provider="anthropic", team=team, user=user, tags=tags, ttl_seconds=ttl_seconds
    )
    overrides: dict[str, Any] = {}
    if is_async:
        assert isinstance(tollgate, AsyncTollgate)
        async_tollgate = tollgate

        async def async_create(*args: Any, **kwargs: Any) -> Any:
            model, estimate = _request(kwargs)
            observe = _observe if kwargs.get("stream") is True else None
            return await call_async(
                async_tollgate,
                context,
                messages.create,
                args,
                kwargs,
                model=model,
                estimate=estimate,
                observe=observe,
            )

        def async_stream(*args: Any, **kwargs: Any) -> Any:
            return _AsyncStreamManager(async_tollgate, context, messages.stream, args, kwargs)

        overrides["create"] = async_create
        overrides["stream"] = async_stream
    else:
        assert isinstance(tollgate, Tollgate)
        sync_tollgate = tollgate

        def sync_create(*args: Any, **kwargs: Any) -> Any:
            model, estimate = _request(kwargs)
            observe = _observe if kwargs.get("stream") is True else None
            return call_sync(
                sync_tollgate,
                context,
                messages.create,
                args,
                kwargs,
                model=model,
                estimate=estimate,
                observe=observe,
            )

        def sync_stream(*args: Any, **kwargs: Any) -> Any:
            return _StreamManager(sync_tollgate, context, messages.stream, args, kwargs)

        overrides["create"] = sync_create
        overrides["stream"] = sync_stream
    return cast(C, Proxy(client, {"messages": overrides}))


def _request(kwargs: dict[str, Any]) -> tuple[str | None, Estimate]:
    model = kwargs.get("model")
    estimate: Estimate = {
        "input_tokens": input_tokens(
            kwargs.get("messages"), kwargs.get("system"), kwargs.get("tools")
        ),
        "max_output_tokens": positive_int(kwargs.get("max_tokens")) or DEFAULT_MAX_OUTPUT_TOKENS,
    }
    return (model if isinstance(model, str) else None), estimate


def _observe(event: Any, settlement: Settlement) -> bool:
    kind = getattr(event, "type", None)
    if kind == "message_start":
        settlement.usage = usage_module.from_response(event.message)
    elif kind == "message_delta" and getattr(event, "usage", None) is not None:
        settlement.usage = usage_module.merge(
            settlement.usage or {}, usage_module.from_response(event.usage)
        )
    return False


def _snapshot_usage(message_stream: Any) -> dict[str, Any] | None:
    """The usage the SDK's MessageStream has gathered so far, if any."""
    try:
        return usage_module.from_response(message_stream.current_message_snapshot)
    except (AssertionError, AttributeError, ValueError):
        return None


class _StreamManager:
    """`messages.stream(...)`: held when its block is entered, settled with
    the stream's gathered usage when it is left (early or not)."""

    def __init__(
        self,
        tollgate: Tollgate,
        context: Context,
        stream: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._tollgate, self._context = tollgate, context
        self._open_stream, self._args, self._kwargs = stream, args, kwargs
        self._model, self._estimate = _request(kwargs)
        self._manager: Any = None
        self._stream: Any = None
        self._settlement: Settlement | None = None

    def __enter__(self) -> Any:
        reservation = self._tollgate.reserve(
            model=self._model,
            team=self._context.team,
            user=self._context.user,
            tags=self._context.tags,
            estimate=self._estimate,
            ttl_seconds=self._context.ttl_seconds,
        )
        self._settlement = Settlement(
            reservation, self._estimate, provider="anthropic", ttl_seconds=self._context.ttl_seconds
        )
        try:
            self._manager = self._open_stream(*self._args, **self._kwargs)
            self._stream = self._manager.__enter__()
        except BaseException:
            release(self._tollgate, self._settlement)
            raise
        return self._stream

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._manager.__exit__(*exc)
        finally:
            assert self._settlement is not None
            self._settlement.usage = _snapshot_usage(self._stream)
            abandon(self._tollgate, self._settlement)


class _AsyncStreamManager:
    """The async twin of `_StreamManager`."""

    def __init__(
        self,
        tollgate: AsyncTollgate,
        context: Context,
        stream: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._tollgate, self._context = tollgate, context
        self._open_stream, self._args, self._kwargs = stream, args, kwargs
        self._model, self._estimate = _request(kwargs)
        self._manager: Any = None
        self._stream: Any = None
        self._settlement: Settlement | None = None

    async def __aenter__(self) -> Any:
        reservation = await self._tollgate.reserve(
            model=self._model,
            team=self._context.team,
            user=self._context.user,
            tags=self._context.tags,
            estimate=self._estimate,
            ttl_seconds=self._context.ttl_seconds,
        )
        self._settlement = Settlement(
            reservation, self._estimate, provider="anthropic", ttl_seconds=self._context.ttl_seconds
        )
        try:
            self._manager = self._open_stream(*self._args, **self._kwargs)
            self._stream = await self._manager.__aenter__()
        except BaseException:
            await _shielded(_arelease(self._tollgate, self._settlement))
            raise
        return self._stream

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._manager.__aexit__(*exc)
        finally:
            assert self._settlement is not None
            self._settlement.usage = _snapshot_usage(self._stream)
            await _shielded(aabandon(self._tollgate, self._settlement))
