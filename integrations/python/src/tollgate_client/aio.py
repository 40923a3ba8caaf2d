"""The asynchronous client, `AsyncTollgate`, and its `AsyncHold`: the twins
of `client.py`, method for method."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Unpack

import httpx

from tollgate_client import _core
from tollgate_client._core import Call, Deadline, logger
from tollgate_client.errors import InvalidRequest, TollgateError, Unavailable
from tollgate_client.types import (
    Budget,
    Decision,
    Estimate,
    Event,
    EventResult,
    Extension,
    FailurePolicy,
    FlushResult,
    Money,
    Release,
    Reservation,
    Status,
)

# Releases still running after their block was cancelled: the event loop
# keeps only weak references to tasks.
_background: set[asyncio.Future[None]] = set()


class AsyncTollgate:
    """The async twin of `Tollgate` (see there), on an `httpx.AsyncClient`.

    `timeout_ms` bounds each call, retries included. When Tollgate does not
    answer in that time (or answers 5xx), `on_unavailable` decides: "refuse"
    raises `Unavailable`; "allow" lets the caller proceed (a check answers
    allowed, a reservation holds nothing, both with `degraded=True`). Events
    Tollgate did not take wait in a bounded queue, whatever the policy, and
    are sent again with the same ids by `flush()` (also tried after the next
    events Tollgate takes, and on `close()`).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_ms: int = _core.DEFAULT_TIMEOUT_MS,
        on_unavailable: FailurePolicy = "refuse",
        retries: int = 2,
        max_queued_events: int = _core.DEFAULT_MAX_QUEUED_EVENTS,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        _core.validate_options(timeout_ms, on_unavailable, retries)
        self.timeout_ms = timeout_ms
        self.on_unavailable: FailurePolicy = on_unavailable
        self.retries = retries
        self.queue = _core.EventQueue(max_queued_events)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient()
        self._base_url = base_url.rstrip("/")
        self._headers = _core.headers(api_key)

    async def __aenter__(self) -> AsyncTollgate:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Tries once to send the queued events, then closes the connections."""
        if len(self.queue):
            await self._flush_quietly()
        if self._owns_http:
            await self._http.aclose()

    # -- the decisions ------------------------------------------------------

    async def check(
        self,
        *,
        model: str | None = None,
        team: str | None = None,
        user: str | None = None,
        tags: dict[str, str] | None = None,
        estimate: Estimate | None = None,
        estimated_cost_usd: Money | None = None,
    ) -> Decision:
        call = _core.check_call(
            model=model,
            team=team,
            user=user,
            tags=tags,
            estimate=estimate,
            estimated_cost_usd=estimated_cost_usd,
        )
        try:
            return Decision.from_json(await self._send(call))
        except Unavailable as error:
            if self.on_unavailable == "allow":
                return _core.degraded_decision(error)
            raise

    async def reserve(
        self,
        *,
        model: str | None = None,
        team: str | None = None,
        user: str | None = None,
        tags: dict[str, str] | None = None,
        estimate: Estimate | None = None,
        estimated_cost_usd: Money | None = None,
        ttl_seconds: int | None = None,
    ) -> Reservation:
        """Holds the estimate on every budget that applies. Raises
        `BudgetExceeded` / `RequestTooExpensive` when refused. `tags` are
        sent (every tag budget of one of them holds it too) and kept for the
        event that settles the hold."""
        call = _core.reserve_call(
            ttl_seconds,
            model=model,
            team=team,
            user=user,
            tags=tags,
            estimate=estimate,
            estimated_cost_usd=estimated_cost_usd,
        )
        try:
            answer = await self._send(call)
        except Unavailable as error:
            if self.on_unavailable == "allow":
                return _core.degraded_reservation(
                    error, team=team, user=user, model=model, tags=tags
                )
            raise
        return Reservation.from_json(answer, team=team, user=user, model=model, tags=tags)

    async def release(self, reservation_id: str) -> Release:
        """Releases a hold (idempotent)."""
        try:
            return Release.from_json(await self._send(_core.release_call(reservation_id)))
        except Unavailable as error:
            if self.on_unavailable == "allow":
                return _core.unknown_release(reservation_id, error)
            raise

    async def extend(self, reservation_id: str, ttl_seconds: int | None = None) -> Extension:
        """Moves a hold's expiry to at least `ttl_seconds` from now (never
        shortens it). Raises `InvalidRequest` (409 `reservation_closed`) for a
        hold that is no longer active."""
        try:
            return Extension.from_json(
                await self._send(_core.extend_call(reservation_id, ttl_seconds))
            )
        except Unavailable as error:
            if self.on_unavailable == "allow":
                logger.warning("tollgate_client: could not extend %s: %s", reservation_id, error)
                return Extension(reservation_id=reservation_id, status="unknown", expires_at=None)
            raise

    def hold(
        self,
        *,
        model: str | None = None,
        team: str | None = None,
        user: str | None = None,
        tags: dict[str, str] | None = None,
        estimate: Estimate | None = None,
        estimated_cost_usd: Money | None = None,
        ttl_seconds: int | None = None,
    ) -> AsyncHold:
        """An async context manager: reserves on entry, yields the `Hold`; leaving the
        block without a final `settle()` (or by an exception) releases it."""
        return AsyncHold(
            self,
            model=model,
            team=team,
            user=user,
            tags=tags,
            estimate=estimate,
            estimated_cost_usd=estimated_cost_usd,
            ttl_seconds=ttl_seconds,
        )

    # -- events -------------------------------------------------------------

    async def record_event(self, **event: Unpack[Event]) -> EventResult:
        return (await self.record_events([event]))[0]

    async def record_events(self, events: Iterable[Event | Mapping[str, Any]]) -> list[EventResult]:
        """Records events, in requests of up to 1000. Each event without an
        `id` gets one, kept when the request is sent again. When Tollgate does
        not answer, the events not taken are queued for `flush()`; then
        "refuse" raises `Unavailable` and "allow" answers them `queued`."""
        prepared = _core.prepare_events(events)
        results: list[EventResult] = []
        pending = _core.batches(prepared)
        while pending:
            batch = pending[0]
            try:
                answer = await self._send(_core.events_call(batch))
            except Unavailable as error:
                left = [event for b in pending for event in b]
                self.queue.put(left)
                if self.on_unavailable == "refuse":
                    raise Unavailable(
                        f"{error.message}; {len(left)} event(s) queued for flush()",
                        status=error.status,
                        code=error.code,
                        body=error.body,
                    ) from error
                logger.warning("tollgate_client: %d event(s) queued: %s", len(left), error.message)
                results.extend(EventResult.deferred(event["id"]) for event in left)
                return results
            results.extend(_core.event_results(answer))
            pending.pop(0)
        if len(self.queue):
            await self._flush_quietly()
        return results

    async def flush(self) -> FlushResult:
        """Sends the queued events. Stops, keeping the rest, when Tollgate does
        not answer. Events the server refuses (4xx) are dropped and logged,
        the others of their request sent again; the first refusal is raised
        after the queue has been worked through."""
        sent = 0
        refused: InvalidRequest | None = None
        while len(self.queue):
            batch = self.queue.take(_core.MAX_BATCH)
            try:
                await self._send(_core.events_call(batch))
            except Unavailable:
                self.queue.put_back(batch)
                break
            except InvalidRequest as error:
                if error.status in _core.KEEP_QUEUED:
                    self.queue.put_back(batch)
                    raise
                refused = refused or error
                self.queue.put_back(_core.without_refused(batch, error))
                continue
            sent += len(batch)
        if refused is not None:
            raise refused
        return FlushResult(sent=sent, remaining=len(self.queue))

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except TollgateError as error:
            logger.error("tollgate_client: queued events refused: %s", error.message)

    # -- reads --------------------------------------------------------------

    async def status(self, *, team: str | None = None, user: str | None = None) -> Status:
        return Status.from_json(await self._send(_core.status_call(team, user)))

    async def budgets(self) -> list[Budget]:
        """Every budget of the key's organization (an admin key)."""
        answer = await self._send(_core.budgets_call())
        return [Budget.from_json(b) for b in answer.get("budgets") or []]

    async def put_budget(
        self,
        scope: str,
        subject: str,
        period: str,
        *,
        limit_usd: Money,
        enforce: bool | None = None,
        soft_limit_pct: int | None = None,
    ) -> Budget:
        """Creates or replaces one budget (an admin key)."""
        call = _core.put_budget_call(
            scope,
            subject,
            period,
            limit_usd=limit_usd,
            enforce=enforce,
            soft_limit_pct=soft_limit_pct,
        )
        return Budget.from_json(await self._send(call))

    async def delete_budget(self, scope: str, subject: str, period: str) -> None:
        await self._send(_core.delete_budget_call(scope, subject, period))

    # -- sending ------------------------------------------------------------

    async def _send(self, call: Call) -> dict[str, Any]:
        deadline = Deadline(self.timeout_ms)
        attempt = 0
        while True:
            error: BaseException
            try:
                remaining = deadline.remaining()
                if remaining <= 0:
                    raise httpx.TimeoutException("no time left for another attempt")
                response = await self._http.request(
                    call.method,
                    self._base_url + call.path,
                    params=call.params or None,
                    content=call.content(),
                    headers=self._headers,
                    timeout=remaining,
                )
                return _core.read_answer(response)
            except httpx.TransportError as transport_error:
                error = transport_error
            except Unavailable as answer_error:
                error = answer_error
            pause = _core.backoff_seconds(attempt)
            if (
                attempt >= self.retries
                or not _core.may_retry(call, error)
                or deadline.remaining() <= pause
            ):
                if isinstance(error, httpx.TransportError):
                    raise _core.unavailable_from(error, self.timeout_ms) from error
                raise error
            await asyncio.sleep(pause)
            attempt += 1


class AsyncHold:
    """A reservation around one model call (see `AsyncTollgate.hold`)."""

    def __init__(self, client: AsyncTollgate, **reserve: Any) -> None:
        self._client = client
        self._reserve = reserve
        self._reservation: Reservation | None = None
        self._started = time.monotonic()
        self.closed = False

    @property
    def reservation(self) -> Reservation:
        if self._reservation is None:
            raise RuntimeError("the hold is taken when its `async with` block is entered")
        return self._reservation

    async def __aenter__(self) -> AsyncHold:
        self._reservation = await self._client.reserve(**self._reserve)
        self._started = time.monotonic()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.closed or self._reservation is None:
            return
        if exc is None:
            await self.release()
            return
        # Released in a task of its own, shielded: a cancelled block (its
        # client gone, a timeout) may be cancelled again at its next await,
        # and the release must reach Tollgate all the same.
        task = asyncio.ensure_future(self._release_after_error())
        _background.add(task)
        task.add_done_callback(_background.discard)
        await asyncio.shield(task)

    async def _release_after_error(self) -> None:
        try:
            await self.release()
        except TollgateError as error:
            # The block's own exception is the one the caller must see; the
            # hold expires on its TTL.
            logger.warning("tollgate_client: could not release after an error: %s", error)

    async def settle(
        self,
        usage_or_response: Any,
        *,
        event_id: str | None = None,
        final: bool = True,
        **event_fields: Any,
    ) -> EventResult:
        """Records the call's usage (a provider response or usage, object or
        dict) against the hold. `final=False` settles part of it and keeps
        the rest held; `event_fields` add to or override the event."""
        if self.closed:
            raise RuntimeError("the hold is already settled or released")
        event = _core.settlement_event(
            self.reservation,
            usage_or_response,
            event_id=event_id,
            final=final,
            latency_ms=round((time.monotonic() - self._started) * 1000),
            fields=event_fields,
        )
        # A final event that is queued (Tollgate did not answer) will settle
        # the hold when it is sent: it must not be released meanwhile.
        self.closed = final
        return (await self._client.record_events([event]))[0]

    async def extend(self, ttl_seconds: int | None = None) -> Extension | None:
        reservation_id = self.reservation.reservation_id
        if reservation_id is None or self.closed:
            return None
        return await self._client.extend(reservation_id, ttl_seconds)

    async def release(self) -> Release | None:
        """Releases what the hold still holds (idempotent)."""
        reservation_id = self.reservation.reservation_id
        if self.closed:
            return None
        self.closed = True
        if reservation_id is None:
            return None
        return await self._client.release(reservation_id)
