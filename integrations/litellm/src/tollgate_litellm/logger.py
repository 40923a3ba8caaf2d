"""`TollgateLogger`: Tollgate's holds around the LiteLLM proxy's model calls.

One instance, named in `litellm_settings.callbacks`, gets these hooks of a call:

1. `async_pre_call_hook` (before the upstream is called): reserves the
   estimate (the messages' tokens as LiteLLM counts them, plus `max_tokens`)
   for the caller's team and user. A refusal is raised as an HTTPException
   with the configured status and Tollgate's message, so the client sees it
   and the upstream never does.
2. `async_log_success_event` (after the call, a stream's at its end): records
   LiteLLM's usage as an event whose id is LiteLLM's call id, settling the hold.
3. `async_post_call_failure_hook` / `async_log_failure_event` (the call
   failed): releases the hold.
4. `async_post_call_streaming_iterator_hook`: while a stream runs, its hold
   is extended every half TTL (`TOLLGATE_HOLD_TTL_SECONDS`), so a stream
   longer than the TTL keeps its budget held to its end. When a stream ends
   early (the client left), LiteLLM bills what was streamed through the
   success event; if none comes within the grace period (nothing was
   streamed yet), the hold is released. No hold is left active either way.

Open holds are kept in this process by call id (a call's hooks all run in
the process that took it), so exactly one of settle and release closes each.
No exception of the adapter reaches the proxy except its refusals: Tollgate
not answering, and the adapter's own faults, are logged and then refuse the
call (`TOLLGATE_ON_UNAVAILABLE=refuse`, 503) or let it through without a hold
(`allow`; its usage is still recorded: events Tollgate does not take wait in
the client's queue and are sent again every `TOLLGATE_FLUSH_SECONDS` until it
takes them).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import litellm
from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from tollgate_client import (
    AsyncTollgate,
    BudgetExceeded,
    InvalidRequest,
    RequestTooExpensive,
    TollgateError,
    Unavailable,
)

from tollgate_litellm.attribution import Caller, attribute
from tollgate_litellm.settings import Settings
from tollgate_litellm.usage import normalized

logger = logging.getLogger("tollgate_litellm")

# The proxy's call types that run a model on messages (or a prompt) for tokens.
HELD_CALL_TYPES = frozenset(
    {
        "completion",
        "acompletion",
        "text_completion",
        "atext_completion",
        "responses",
        "aresponses",
        "anthropic_messages",
    }
)


@dataclass
class OpenCall:
    reservation_id: str | None
    team: str | None
    user: str | None
    tags: dict[str, str]
    model: str
    # time.monotonic() by which Tollgate expires the hold unless extended.
    held_until: float
    released: bool = False


class TollgateLogger(CustomLogger):
    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings or Settings.from_env()
        self._client: AsyncTollgate | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        # call id -> its hold, by `held_until` (pruned once past it).
        self._calls: OrderedDict[str, OpenCall] = OrderedDict()
        # Grace-period releases and extensions in flight: the loop keeps only
        # weak references.
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None

    @property
    def client(self) -> AsyncTollgate:
        # httpx's pool belongs to the loop it first ran on.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = AsyncTollgate(
                self.settings.url,
                self.settings.api_key,
                timeout_ms=self.settings.timeout_ms,
                on_unavailable=self.settings.on_unavailable,
            )
            self._client_loop = loop
        return self._client

    # -- before the call -----------------------------------------------------

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any
    ) -> dict:
        if call_type not in HELD_CALL_TYPES:
            return data
        call_id = str(data.get("litellm_call_id") or "")
        try:
            await self._reserve(call_id, user_api_key_dict, data)
        except (BudgetExceeded, RequestTooExpensive) as refusal:
            self._calls.pop(call_id, None)
            raise HTTPException(
                status_code=self.settings.refusal_status,
                detail={"error": {**refusal.error, "message": refusal.message}},
            ) from None
        except Exception as error:
            if self.settings.on_unavailable == "refuse":
                self._calls.pop(call_id, None)
            elif call_id and call_id not in self._calls:
                # Under "allow" the call goes ahead without a hold and its usage
                # is still recorded: by the org alone when even who is charged
                # could not be told.
                self._calls[call_id] = OpenCall(
                    None, None, None, {}, str(data.get("model") or ""), self._held_until()
                )
            self._fail("reserve", error)
        return data

    async def _reserve(self, call_id: str, auth: Any, data: dict) -> None:
        who = attribute(
            caller_of(auth, data),
            team_from=self.settings.team_from,
            user_from=self.settings.user_from,
            tags_from=self.settings.tags_from,
        )
        model = deployment_model(str(data.get("model") or ""))
        # Known before the estimate, which LiteLLM's tokenizers may fail on:
        # under "allow" the call's usage is then recorded all the same.
        call = OpenCall(None, who.team, who.user, who.tags, model, self._held_until())
        if call_id:
            self._prune()
            self._calls[call_id] = call
        estimate = {
            "input_tokens": input_tokens(model, data),
            "max_output_tokens": max_output_tokens(data, self.settings.default_max_tokens),
        }
        reservation = await self.client.reserve(
            model=model,
            team=who.team,
            user=who.user,
            tags=who.tags or None,  # tag budgets hold it too
            estimate=estimate,  # type: ignore[arg-type]
            ttl_seconds=self.settings.hold_ttl_seconds,
        )
        call.reservation_id = reservation.reservation_id

    # -- after the call ------------------------------------------------------

    async def async_log_success_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            await self._settle(kwargs, response_obj, start_time, end_time)
        except Unavailable as error:
            logger.error("tollgate_litellm: a call's usage waits to be recorded: %s", error.message)
        except Exception as error:
            logger.exception("tollgate_litellm: could not record a call's usage: %s", error)
        try:
            if len(self.client.queue):
                self._flush_later()
        except Exception as error:  # never let the queue's upkeep reach the proxy
            logger.exception("tollgate_litellm: could not schedule sending queued usage: %s", error)

    async def _settle(self, kwargs: dict, response: Any, start_time: Any, end_time: Any) -> None:
        call_id = str(kwargs.get("litellm_call_id") or "")
        call = self._calls.pop(call_id, None)
        if call is None:
            return  # not a call this adapter held (another call type, or its hook failed)
        logging_object = kwargs.get("standard_logging_object") or {}
        event: dict[str, Any] = {
            "id": call_id,
            "team": call.team,
            "user": call.user,
            "tags": call.tags or None,
            "model": logging_object.get("model") or kwargs.get("model") or call.model,
            "provider": logging_object.get("custom_llm_provider") or None,
            "usage": normalized(getattr(response, "usage", None)),
            "latency_ms": _milliseconds(start_time, end_time),
            "status": "ok",
            # Named even when released after a client left: the usage counts all the same.
            "reservation_id": call.reservation_id,
        }
        event = {name: value for name, value in event.items() if value is not None}
        try:
            await self.client.record_events([event])
        except InvalidRequest as error:
            if error.status != 409:
                raise
            # A caller may send its own call id (x-litellm-call-id) twice; the
            # second call is recorded under an id of its own, not dropped.
            event["id"] = f"{call_id}:{call.reservation_id or uuid.uuid4()}"[:128]
            await self.client.record_events([event])

    async def async_log_failure_event(
        self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await self._release(str(kwargs.get("litellm_call_id") or ""))

    async def async_post_call_failure_hook(
        self,
        request_data: dict,
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        await self._release(str(request_data.get("litellm_call_id") or ""))

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict
    ) -> AsyncGenerator[Any, None]:
        call_id = str(request_data.get("litellm_call_id") or "")
        keep_alive = self._keep_alive(call_id)
        finished = False
        try:
            async for item in response:
                yield item
            finished = True
        finally:
            if keep_alive is not None:
                keep_alive.cancel()
            if not finished:
                self._release_later(call_id)

    async def _release(self, call_id: str) -> None:
        call = self._calls.pop(call_id, None)
        if call is None or call.reservation_id is None or call.released:
            return
        try:
            await self.client.release(call.reservation_id)
        except Exception as error:
            # It expires on its TTL.
            logger.exception("tollgate_litellm: could not release a hold: %s", error)

    def _release_later(self, call_id: str) -> None:
        """After a stream ended early: LiteLLM may still bill what was streamed
        (a success event settles the hold); if it has not within the grace
        period, release. The entry stays, marked released, so a late success
        event still records the usage."""

        async def release_after_grace() -> None:
            await asyncio.sleep(self.settings.disconnect_grace_seconds)
            call = self._calls.get(call_id)
            if call is None or call.released or call.reservation_id is None:
                return
            call.released = True
            try:
                await self.client.release(call.reservation_id)
            except Exception as error:
                logger.exception("tollgate_litellm: could not release a hold: %s", error)

        self._background(release_after_grace())

    def _keep_alive(self, call_id: str) -> asyncio.Task[None] | None:
        """Extends a streamed call's hold every half TTL while the stream runs
        (the SDK wrappers of tollgate_client do the same), so that Tollgate
        does not expire it, and stop counting it, before the stream ends. The
        caller cancels the task when the stream ends."""
        call = self._calls.get(call_id)
        if call is None or call.reservation_id is None:
            return None
        reservation_id = call.reservation_id
        ttl = self.settings.hold_ttl_seconds

        async def extend_every_half_ttl() -> None:
            due = call.held_until - ttl / 2
            while True:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if call.released or self._calls.get(call_id) is not call:
                    return  # settled, released or forgotten meanwhile
                try:
                    extension = await self.client.extend(reservation_id, ttl)
                except InvalidRequest as error:
                    # 409: closed (settled, released, or expired after all).
                    logger.warning("tollgate_litellm: a stream's hold ended: %s", error.message)
                    return
                except Exception as error:
                    extension = None
                    logger.warning("tollgate_litellm: could not extend a stream's hold: %s", error)
                if extension is None or extension.status != "active":
                    # Not answered ("unknown" under allow): tried again in a
                    # quarter TTL, which the hold still has left.
                    due = time.monotonic() + ttl / 4
                    continue
                call.held_until = self._held_until()
                if self._calls.get(call_id) is call:
                    self._calls.move_to_end(call_id)  # keeps the dict in `held_until` order
                due = call.held_until - ttl / 2

        return self._background(extend_every_half_ttl())

    def _flush_later(self) -> None:
        """Sends the usage Tollgate did not take again, every
        `TOLLGATE_FLUSH_SECONDS`, until it has taken all of it (the client
        also tries after the next events Tollgate takes)."""
        if self._flusher is not None and not self._flusher.done():
            return
        client = self.client

        async def flush_until_empty() -> None:
            while len(client.queue):
                await asyncio.sleep(self.settings.flush_seconds)
                try:
                    result = await client.flush()
                except TollgateError as error:
                    logger.error("tollgate_litellm: queued usage refused: %s", error.message)
                    continue
                if result.sent:
                    logger.warning(
                        "tollgate_litellm: sent %d queued event(s), %d left",
                        result.sent,
                        result.remaining,
                    )

        self._flusher = self._background(flush_until_empty())

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- faults --------------------------------------------------------------

    def _fail(self, step: str, error: BaseException) -> None:
        """The failure policy: log, then refuse (503) or let the call through."""
        reason = error.message if isinstance(error, TollgateError) else repr(error)
        if self.settings.on_unavailable == "allow":
            logger.error("tollgate_litellm: %s failed, the call goes ahead: %s", step, reason)
            return
        logger.error("tollgate_litellm: %s failed, the call is refused: %s", step, reason)
        _refuse_unavailable(reason)

    def _held_until(self) -> float:
        return time.monotonic() + self.settings.hold_ttl_seconds

    def _prune(self) -> None:
        """Forget holds past their expiry: Tollgate has expired them."""
        now = time.monotonic()
        while self._calls:
            call_id, call = next(iter(self._calls.items()))
            if call.held_until > now:
                break
            del self._calls[call_id]

    def open_holds(self) -> int:
        """How many calls this process holds for (for tests and metrics)."""
        return sum(1 for call in self._calls.values() if not call.released)


def _refuse_unavailable(reason: str) -> NoReturn:
    raise HTTPException(
        status_code=503,
        detail={
            "error": {
                "code": "tollgate_unavailable",
                "message": "The budget service could not decide on this request, so it is "
                f"refused (TOLLGATE_ON_UNAVAILABLE=refuse): {reason}",
            }
        },
    )


def caller_of(auth: Any, data: Mapping[str, Any]) -> Caller:
    """The caller as LiteLLM's proxy knows it: the key's fields from its auth
    object, the end user, the caller's metadata and the request's tags."""
    metadata = data.get("metadata") or data.get("litellm_metadata") or {}
    requester = metadata.get("requester_metadata") if isinstance(metadata, dict) else None
    tags = metadata.get("tags") if isinstance(metadata, dict) else None
    return Caller(
        key_alias=getattr(auth, "key_alias", None),
        team_alias=getattr(auth, "team_alias", None),
        team_id=getattr(auth, "team_id", None),
        user_id=getattr(auth, "user_id", None),
        end_user=getattr(auth, "end_user_id", None) or data.get("user"),
        metadata=requester if isinstance(requester, dict) else {},
        tags=tuple(tag for tag in tags or () if isinstance(tag, str)),
    )


def deployment_model(model_group: str) -> str:
    """The model behind a proxy model name (`openai/gpt-4o` for `my-gpt`),
    which Tollgate can price; the name itself when the router has none."""
    try:
        from litellm.proxy.proxy_server import llm_router

        deployments = llm_router.get_model_list(model_name=model_group) if llm_router else None
        if deployments:
            model = deployments[0].get("litellm_params", {}).get("model")
            if isinstance(model, str) and model:
                return model
    except Exception:  # the name as sent is a fine fallback
        pass
    return model_group


def input_tokens(model: str, data: Mapping[str, Any]) -> int:
    """The request's input tokens as LiteLLM counts them (its local tokenizers)."""
    messages = data.get("messages")
    if isinstance(messages, list) and messages:
        return int(litellm.token_counter(model=model, messages=messages))
    text = data.get("prompt") if data.get("prompt") is not None else data.get("input")
    if isinstance(text, str):
        return int(litellm.token_counter(model=model, text=text))
    if isinstance(text, list) and text:
        if all(isinstance(item, dict) for item in text):
            return int(litellm.token_counter(model=model, messages=text))
        return int(litellm.token_counter(model=model, text=" ".join(map(str, text))))
    return 0


def max_output_tokens(data: Mapping[str, Any], default: int) -> int:
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


def _milliseconds(start: Any, end: Any) -> int | None:
    try:
        return max(0, round((end - start).total_seconds() * 1000))
    except Exception:  # latency is optional
        return None
