"""What the OpenAI and Anthropic wrappers share: a proxy that replaces a few
methods of an SDK client and passes everything else through, the estimate a
hold is taken for, the settlement of one call (once: settled, or released),
and the streams that settle when they end and release when abandoned."""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from typing import Any, Generic, TypeVar

from tollgate_client import usage as usage_module
from tollgate_client._core import logger, new_event_id
from tollgate_client.aio import AsyncTollgate
from tollgate_client.client import Tollgate
from tollgate_client.errors import TollgateError
from tollgate_client.types import Estimate, Reservation

T = TypeVar("T")

# A rough count, on the side of holding too much: about 4 characters make a
# token in English prose, fewer in code and most other scripts.
CHARS_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4
# An image costs up to ~1,600 tokens at OpenAI's and Anthropic's sizes.
TOKENS_PER_IMAGE = 1600
IMAGE_TYPES = frozenset({"image", "image_url", "input_image", "document", "file", "input_file"})


class Proxy:
    """`target` with some attributes replaced: `overrides` maps a name to the
    replacement, or to a dict of overrides one level down
    (`{"chat": {"completions": {"create": ...}}}`)."""

    def __init__(self, target: Any, overrides: Mapping[str, Any]) -> None:
        self._tollgate_target = target
        self._tollgate_overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if "_tollgate_target" not in self.__dict__:
            raise AttributeError(name)
        override = self._tollgate_overrides.get(name)
        value = getattr(self._tollgate_target, name)
        if override is None:
            return value
        if isinstance(override, Mapping):
            return Proxy(value, override)
        return override

    def __repr__(self) -> str:
        return f"tollgate wrapped {self._tollgate_target!r}"

    # `with wrap(OpenAI(), tollgate) as client:` (dunders skip __getattr__).
    def __enter__(self) -> Proxy:
        self._tollgate_target.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._tollgate_target.__exit__(*exc)

    async def __aenter__(self) -> Proxy:
        await self._tollgate_target.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._tollgate_target.__aexit__(*exc)


def is_async(method: Any) -> bool:
    # The SDKs decorate their methods (argument checks): look beneath.
    return inspect.iscoroutinefunction(inspect.unwrap(method))


def input_tokens(*parts: Any) -> int:
    """A rough, generous token count of a request's messages, system prompt
    and tools (JSON-like values)."""
    chars, images, messages = _measure(parts)
    return (
        math.ceil(chars / CHARS_PER_TOKEN)
        + images * TOKENS_PER_IMAGE
        + messages * TOKENS_PER_MESSAGE
    )


def _measure(value: Any) -> tuple[int, int, int]:
    if isinstance(value, str):
        return len(value), 0, 0
    if isinstance(value, Mapping):
        if value.get("type") in IMAGE_TYPES:
            return 0, 1, 0
        chars = images = messages = 0
        if "role" in value:
            messages += 1
        for item in value.values():
            c, i, m = _measure(item)
            chars, images, messages = chars + c, images + i, messages + m
        return chars, images, messages
    if isinstance(value, list | tuple):
        chars = images = messages = 0
        for item in value:
            c, i, m = _measure(item)
            chars, images, messages = chars + c, images + i, messages + m
        return chars, images, messages
    return 0, 0, 0


def positive_int(value: Any) -> int | None:
    """An int argument, or None for absent (the SDKs' `omit`/`NOT_GIVEN` too)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


class Settlement:
    """One wrapped call's hold: settled with the call's usage, or released;
    whichever comes first, once."""

    def __init__(
        self,
        reservation: Reservation,
        estimate: Estimate,
        *,
        provider: str,
        ttl_seconds: int | None,
    ) -> None:
        self.reservation = reservation
        self.estimate = estimate
        self.provider = provider
        self.ttl_seconds = ttl_seconds
        self.started = time.monotonic()
        self.last_extended = self.started
        self.usage: dict[str, Any] | None = None
        self.done = False

    def event(self, usage: dict[str, Any] | None) -> dict[str, Any]:
        if usage is None:
            # The provider said nothing of what the call used: count what the
            # hold was taken for, never nothing.
            logger.warning(
                "tollgate_client: no usage for a %s call; recording its estimate", self.provider
            )
            usage = {
                "input_tokens": self.estimate["input_tokens"],
                "output_tokens": self.estimate.get("max_output_tokens", 0),
            }
        event: dict[str, Any] = {
            "id": new_event_id(),
            "model": self.reservation.model,
            "provider": self.provider,
            "usage": usage,
            "latency_ms": round((time.monotonic() - self.started) * 1000),
            "status": "ok",
        }
        for key in ("team", "user", "tags", "reservation_id"):
            value = getattr(self.reservation, key)
            if value is not None:
                event[key] = value
        return event

    def extend_due(self) -> bool:
        """A long stream renews its hold every half TTL."""
        if self.done or self.reservation.reservation_id is None:
            return False
        ttl = self.ttl_seconds or 300
        return time.monotonic() - self.last_extended > ttl / 2

    def take(self) -> bool:
        """True for the one caller that may settle or release."""
        if self.done:
            return False
        self.done = True
        return True


def settle(tollgate: Tollgate, settlement: Settlement, usage: dict[str, Any] | None) -> None:
    if not settlement.take():
        return
    try:
        tollgate.record_events([settlement.event(usage)])
    except TollgateError as error:
        # The call has happened and its answer is the caller's: a Tollgate
        # that did not answer keeps the event queued; a refusal is logged.
        logger.error("tollgate_client: could not settle a %s call: %s", settlement.provider, error)


def release(tollgate: Tollgate, settlement: Settlement) -> None:
    if not settlement.take() or settlement.reservation.reservation_id is None:
        return
    try:
        tollgate.release(settlement.reservation.reservation_id)
    except TollgateError as error:
        logger.warning("tollgate_client: could not release a hold (it expires): %s", error)


def abandon(tollgate: Tollgate, settlement: Settlement) -> None:
    """A stream left before its end: what it used so far if the provider
    said (Anthropic counts input up front), else nothing is known: release."""
    if settlement.usage is not None:
        settle(tollgate, settlement, settlement.usage)
    else:
        release(tollgate, settlement)


def extend(tollgate: Tollgate, settlement: Settlement) -> None:
    settlement.last_extended = time.monotonic()
    try:
        assert settlement.reservation.reservation_id is not None
        tollgate.extend(settlement.reservation.reservation_id, settlement.ttl_seconds)
    except TollgateError as error:
        logger.warning("tollgate_client: could not extend a stream's hold: %s", error)


async def asettle(
    tollgate: AsyncTollgate, settlement: Settlement, usage: dict[str, Any] | None
) -> None:
    if not settlement.take():
        return
    try:
        await tollgate.record_events([settlement.event(usage)])
    except TollgateError as error:
        logger.error("tollgate_client: could not settle a %s call: %s", settlement.provider, error)


async def arelease(tollgate: AsyncTollgate, settlement: Settlement) -> None:
    if not settlement.take() or settlement.reservation.reservation_id is None:
        return
    try:
        await tollgate.release(settlement.reservation.reservation_id)
    except TollgateError as error:
        logger.warning("tollgate_client: could not release a hold (it expires): %s", error)


async def aabandon(tollgate: AsyncTollgate, settlement: Settlement) -> None:
    if settlement.usage is not None:
        await asettle(tollgate, settlement, settlement.usage)
    else:
        await arelease(tollgate, settlement)


async def aextend(tollgate: AsyncTollgate, settlement: Settlement) -> None:
    settlement.last_extended = time.monotonic()
    try:
        assert settlement.reservation.reservation_id is not None
        await tollgate.extend(settlement.reservation.reservation_id, settlement.ttl_seconds)
    except TollgateError as error:
        logger.warning("tollgate_client: could not extend a stream's hold: %s", error)


# Observes one item of a stream: records what it says of usage into the
# settlement, and answers whether the caller should not see it (a usage
# chunk the wrapper asked for).
Observer = Callable[[Any, Settlement], bool]


class SyncStream(Generic[T]):
    """An SDK stream that settles its hold when it ends, and releases it when
    it is closed early, garbage collected or fails."""

    def __init__(
        self, stream: Any, tollgate: Tollgate, settlement: Settlement, observe: Observer
    ) -> None:
        self._stream = stream
        self._tollgate = tollgate
        self._settlement = settlement
        self._observe = observe
        self._iterator: Iterator[T] = iter(stream)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while True:
            try:
                item = next(self._iterator)
            except StopIteration:
                settle(self._tollgate, self._settlement, self._settlement.usage)
                raise
            except BaseException:
                abandon(self._tollgate, self._settlement)
                raise
            if self._settlement.extend_due():
                extend(self._tollgate, self._settlement)
            if not self._observe(item, self._settlement):
                return item

    def close(self) -> None:
        abandon(self._tollgate, self._settlement)
        self._stream.close()

    def __enter__(self) -> SyncStream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if "_settlement" in self.__dict__ and not self._settlement.done:
            try:
                abandon(self._tollgate, self._settlement)
            except Exception:
                logger.exception("tollgate_client: could not release an abandoned stream's hold")

    def __getattr__(self, name: str) -> Any:
        if "_stream" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self._stream, name)


# Releases of async streams still running after their task was cancelled,
# or scheduled when a stream was collected without being closed.
_finalizers: set[asyncio.Future[None]] = set()


class AsyncStream(Generic[T]):
    """The async twin of `SyncStream`."""

    def __init__(
        self, stream: Any, tollgate: AsyncTollgate, settlement: Settlement, observe: Observer
    ) -> None:
        self._stream = stream
        self._tollgate = tollgate
        self._settlement = settlement
        self._observe = observe
        self._iterator: AsyncIterator[T] = stream.__aiter__()
        self._loop = asyncio.get_running_loop()

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            try:
                item = await self._iterator.__anext__()
            except StopAsyncIteration:
                await asettle(self._tollgate, self._settlement, self._settlement.usage)
                raise
            except BaseException:
                await _shielded(self._finish_abandoned())
                raise
            if self._settlement.extend_due():
                await aextend(self._tollgate, self._settlement)
            if not self._observe(item, self._settlement):
                return item

    async def _finish_abandoned(self) -> None:
        await aabandon(self._tollgate, self._settlement)

    async def close(self) -> None:
        await _shielded(self._finish_abandoned())
        await self._stream.close()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self) -> None:
        if "_loop" not in self.__dict__:
            return
        if self._settlement.done or self._loop.is_closed():
            if not self._settlement.done:
                logger.warning("tollgate_client: a stream's hold expires on its TTL (loop closed)")
            return
        self._loop.call_soon_threadsafe(_schedule, self._loop, self._finish_abandoned())

    def __getattr__(self, name: str) -> Any:
        if "_stream" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self._stream, name)


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Runs `work` to its end even if the awaiting task is cancelled (again)."""
    task = asyncio.ensure_future(work)
    _finalizers.add(task)
    task.add_done_callback(_finalizers.discard)
    await asyncio.shield(task)


def _schedule(loop: asyncio.AbstractEventLoop, release: Coroutine[Any, Any, None]) -> None:
    task = loop.create_task(release)
    _finalizers.add(task)
    task.add_done_callback(_finalizers.discard)


class Context:
    """What every call of one wrapped client is attributed to."""

    def __init__(
        self,
        *,
        provider: str,
        team: str | None,
        user: str | None,
        tags: dict[str, str] | None,
        ttl_seconds: int | None,
    ) -> None:
        self.provider = provider
        self.team = team
        self.user = user
        self.tags = tags
        self.ttl_seconds = ttl_seconds


def usage_or_none(response: Any) -> dict[str, Any] | None:
    try:
        return usage_module.from_response(response)
    except ValueError:
        return None


def call_sync(
    tollgate: Tollgate,
    context: Context,
    call: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    model: str | None,
    estimate: Estimate,
    observe: Observer | None,
) -> Any:
    """Reserve, call, then settle from the response's usage; a stream
    (`observe` given) settles when it ends. Raises what `reserve` raises
    (`BudgetExceeded`, ...) before the provider is called."""
    reservation = tollgate.reserve(
        model=model,
        team=context.team,
        user=context.user,
        tags=context.tags,
        estimate=estimate,
        ttl_seconds=context.ttl_seconds,
    )
    settlement = Settlement(
        reservation, estimate, provider=context.provider, ttl_seconds=context.ttl_seconds
    )
    try:
        result = call(*args, **kwargs)
    except BaseException:
        release(tollgate, settlement)
        raise
    if observe is not None:
        return SyncStream[Any](result, tollgate, settlement, observe)
    settle(tollgate, settlement, usage_or_none(result))
    return result


async def call_async(
    tollgate: AsyncTollgate,
    context: Context,
    call: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    model: str | None,
    estimate: Estimate,
    observe: Observer | None,
) -> Any:
    """The async twin of `call_sync`."""
    reservation = await tollgate.reserve(
        model=model,
        team=context.team,
        user=context.user,
        tags=context.tags,
        estimate=estimate,
        ttl_seconds=context.ttl_seconds,
    )
    settlement = Settlement(
        reservation, estimate, provider=context.provider, ttl_seconds=context.ttl_seconds
    )
    try:
        result = await call(*args, **kwargs)
    except BaseException:
        await _shielded(arelease(tollgate, settlement))
        raise
    if observe is not None:
        return AsyncStream[Any](result, tollgate, settlement, observe)
    await asettle(tollgate, settlement, usage_or_none(result))
    return result


def check_flavour(method: Any, tollgate: Tollgate | AsyncTollgate, sdk: str) -> bool:
    """True for an async SDK client; the Tollgate client must be of its flavour."""
    if is_async(method):
        if not isinstance(tollgate, AsyncTollgate):
            raise TypeError(f"an async {sdk} client needs an AsyncTollgate")
        return True
    if not isinstance(tollgate, Tollgate):
        raise TypeError(f"a sync {sdk} client needs a Tollgate (AsyncTollgate is for async ones)")
    return False
