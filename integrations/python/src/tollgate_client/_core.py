"""What the sync and async clients share: the requests they build, how an
answer is read, when a request may be sent again, and the queue of events
that wait for Tollgate to come back. Only the sending differs between them."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx

from tollgate_client import usage as usage_module
from tollgate_client._parse import json_default
from tollgate_client.errors import TollgateError, Unavailable, error_from_response
from tollgate_client.types import (
    Decision,
    Estimate,
    Event,
    EventResult,
    Money,
    Release,
    Reservation,
)

logger = logging.getLogger("tollgate_client")

VERSION = "0.1.0"
# The server takes at most 1000 events in one request (docs/api.md).
MAX_BATCH = 1000
DEFAULT_TIMEOUT_MS = 2000
DEFAULT_MAX_QUEUED_EVENTS = 10_000

# Answers that say nothing about the events themselves: the queue keeps them.
KEEP_QUEUED = frozenset({401, 403, 429})

# "always": sending it twice does what sending it once does (reads, release,
# extend, events by their ids). "unsent": it may be sent again only when the
# first attempt never reached the server (a reservation would hold twice).
Retry = Literal["always", "unsent"]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)
    retry: Retry = "always"

    def content(self) -> bytes | None:
        if self.body is None:
            return None
        return json.dumps(self.body, default=json_default, separators=(",", ":")).encode()


def headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"tollgate-client/{VERSION}",
    }


def validate_options(timeout_ms: int, on_unavailable: str, retries: int) -> None:
    if timeout_ms <= 0:
        raise ValueError("timeout_ms must be positive")
    if on_unavailable not in ("refuse", "allow"):
        raise ValueError("on_unavailable must be 'refuse' or 'allow'")
    if retries < 0:
        raise ValueError("retries must be 0 or more")


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def decision_body(
    *,
    model: str | None,
    team: str | None,
    user: str | None,
    estimate: Estimate | None,
    estimated_cost_usd: Money | None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    return _drop_none(
        {
            "team": team,
            "user": user,
            "model": model,
            "tags": dict(tags) if tags else None,
            "estimate": dict(estimate) if estimate is not None else None,
            "estimated_cost_usd": (
                str(estimated_cost_usd) if estimated_cost_usd is not None else None
            ),
        }
    )


def check_call(**decision: Any) -> Call:
    return Call("POST", "/v1/budget/check", decision_body(**decision))


def reserve_call(ttl_seconds: int | None, **decision: Any) -> Call:
    body = decision_body(**decision)
    if ttl_seconds is not None:
        body["ttl_seconds"] = ttl_seconds
    return Call("POST", "/v1/budget/reservations", body, retry="unsent")


def release_call(reservation_id: str) -> Call:
    return Call("POST", f"/v1/budget/reservations/{quote(reservation_id, safe='')}/release")


def extend_call(reservation_id: str, ttl_seconds: int | None) -> Call:
    body = {"ttl_seconds": ttl_seconds} if ttl_seconds is not None else {}
    return Call("POST", f"/v1/budget/reservations/{quote(reservation_id, safe='')}/extend", body)


def events_call(batch: list[dict[str, Any]]) -> Call:
    return Call("POST", "/v1/events", {"events": batch})


def status_call(team: str | None, user: str | None) -> Call:
    return Call("GET", "/v1/budget/status", params=_drop_none({"team": team, "user": user}))


def budgets_call() -> Call:
    return Call("GET", "/v1/budgets")


def put_budget_call(
    scope: str,
    subject: str,
    period: str,
    *,
    limit_usd: Money,
    enforce: bool | None,
    soft_limit_pct: int | None,
) -> Call:
    path = "/v1/budgets/" + "/".join(quote(part, safe="") for part in (scope, subject, period))
    body = _drop_none(
        {"limit_usd": str(limit_usd), "enforce": enforce, "soft_limit_pct": soft_limit_pct}
    )
    return Call("PUT", path, body)


def delete_budget_call(scope: str, subject: str, period: str) -> Call:
    path = "/v1/budgets/" + "/".join(quote(part, safe="") for part in (scope, subject, period))
    return Call("DELETE", path)


def read_answer(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or the typed error for a non-2xx."""
    try:
        body: Any = response.json() if response.content else {}
    except ValueError:
        body = None
    if response.is_success:
        if not isinstance(body, dict):
            raise Unavailable(
                f"Tollgate answered {response.status_code} with a body that is not a JSON object",
                status=response.status_code,
            )
        return body
    raise error_from_response(response.status_code, body, response.text)


def may_retry(call: Call, error: BaseException) -> bool:
    """Whether `call` may be sent again after `error`."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True  # the request never left
    if call.retry != "always":
        return False
    if isinstance(error, httpx.TransportError):
        return True
    return isinstance(error, TollgateError) and error.status is not None and error.status >= 500


def unavailable_from(error: httpx.TransportError, timeout_ms: int) -> Unavailable:
    if isinstance(error, httpx.TimeoutException):
        return Unavailable(f"Tollgate did not answer within {timeout_ms} ms ({error!r})")
    return Unavailable(f"Tollgate could not be reached: {error!r}")


def backoff_seconds(attempt: int) -> float:
    return min(0.05 * 2.0**attempt, 0.5)


class Deadline:
    """The time one call of the client may take, all attempts included."""

    def __init__(self, timeout_ms: int) -> None:
        self.end = time.monotonic() + timeout_ms / 1000

    def remaining(self) -> float:
        return self.end - time.monotonic()


def new_event_id() -> str:
    return str(uuid.uuid4())


def prepare_events(events: Iterable[Event | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The events as JSON objects, each with an id (kept across retries)."""
    prepared = []
    for event in events:
        data = dict(event)
        if not data.get("id"):
            data["id"] = new_event_id()
        prepared.append(data)
    return prepared


def batches(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [events[i : i + MAX_BATCH] for i in range(0, len(events), MAX_BATCH)]


def event_results(answer: dict[str, Any]) -> list[EventResult]:
    return [EventResult.from_json(r) for r in answer.get("results") or [] if isinstance(r, dict)]


class EventQueue:
    """Events Tollgate did not take because it did not answer, oldest first,
    bounded: past `max_size` the oldest are dropped (and logged), so that an
    outage cannot grow a gateway's memory without end."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_queued_events must be at least 1")
        self._events: deque[dict[str, Any]] = deque()
        self._max = max_size
        self._lock = threading.Lock()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._events)

    def put(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self._events.extend(events)
            overflow = len(self._events) - self._max
            for _ in range(max(overflow, 0)):
                lost = self._events.popleft()
                self.dropped += 1
                logger.error(
                    "tollgate_client: event queue full (%d); dropped event %s",
                    self._max,
                    lost.get("id"),
                )

    def take(self, n: int) -> list[dict[str, Any]]:
        with self._lock:
            return [self._events.popleft() for _ in range(min(n, len(self._events)))]

    def put_back(self, events: list[dict[str, Any]]) -> None:
        """Events taken but not sent go back to the front, in order."""
        with self._lock:
            self._events.extendleft(reversed(events))
            while len(self._events) > self._max:
                lost = self._events.pop()
                self.dropped += 1
                logger.error(
                    "tollgate_client: event queue full (%d); dropped event %s",
                    self._max,
                    lost.get("id"),
                )


def degraded_decision(error: Unavailable) -> Decision:
    logger.warning("tollgate_client: allowing without a decision: %s", error.message)
    return Decision(
        allowed=True,
        estimated_cost_usd=None,
        budgets=[],
        warnings=[],
        blocked_by=None,
        degraded=True,
        raw={},
    )


def degraded_reservation(
    error: Unavailable,
    *,
    team: str | None,
    user: str | None,
    model: str | None,
    tags: dict[str, str] | None,
) -> Reservation:
    logger.warning("tollgate_client: proceeding without a hold: %s", error.message)
    return Reservation(
        reservation_id=None,
        amount_usd=None,
        expires_at=None,
        budgets=[],
        warnings=[],
        degraded=True,
        team=team,
        user=user,
        model=model,
        tags=tags,
    )


def unknown_release(reservation_id: str, error: Unavailable) -> Release:
    logger.warning(
        "tollgate_client: could not release %s (it expires on its TTL): %s",
        reservation_id,
        error.message,
    )
    return Release(reservation_id=reservation_id, status="unknown", released=False)


def settlement_event(
    reservation: Reservation,
    usage_or_response: Any,
    *,
    event_id: str | None,
    final: bool,
    latency_ms: int | None,
    fields: Mapping[str, Any],
) -> dict[str, Any]:
    """The event settling `reservation` with the usage of a response."""
    event: dict[str, Any] = _drop_none(
        {
            "id": event_id or new_event_id(),
            "team": reservation.team,
            "user": reservation.user,
            "model": reservation.model,
            "tags": reservation.tags,
            "latency_ms": latency_ms,
            "reservation_id": reservation.reservation_id,
        }
    )
    if usage_or_response is not None:
        event["usage"] = usage_module.from_response(usage_or_response)
    if not final:
        event["final"] = False
    event.update(_drop_none(fields))
    return event


def without_refused(batch: list[dict[str, Any]], error: TollgateError) -> list[dict[str, Any]]:
    """The events of a refused batch that the refusal did not name (a 422
    names each bad event, a 409 each conflicting id, a 404 each unknown
    subject); none when it named none, since then the batch cannot be sent."""
    named = error.error.get("errors") or error.error.get("conflicts") or []
    indexes = {
        item["index"]
        for item in named
        if isinstance(item, dict)
        and isinstance(item.get("index"), int)
        and 0 <= item["index"] < len(batch)
    }
    for index in sorted(indexes):
        logger.error("tollgate_client: queued event %s refused: %s", batch[index].get("id"), error)
    if not indexes:
        logger.error("tollgate_client: %d queued event(s) refused: %s", len(batch), error)
        return []
    return [event for i, event in enumerate(batch) if i not in indexes]
