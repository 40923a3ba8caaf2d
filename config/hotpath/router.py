"""A small ASGI front for the JSON API, routed ahead of Django.

A Django async view runs each request through a thread before it does
anything, which caps a worker far below what a plain ASGI handler with the
same pool and SQL serves (docs/benchmarks/compare.md). So the gateway-facing
endpoints are plain async functions behind this router; everything else
(admin, dashboard, login) falls through to Django unchanged.

Handlers take a `Request` and return `(status, body)`; they raise `ApiError`
for any failure, which becomes the one error shape of docs/api.md. The router
imports no app: config/asgi.py gives it the routes and the function that
authenticates a caller's key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from django.conf import settings

from config import logging as log_context
from config.hotpath import db, metrics
from config.hotpath.errors import ApiError, JsonBody
from config.hotpath.inputs import usd_text
from config.hotpath.throttle import FailureThrottle, client_network
from config.logging import new_request_id

logger = logging.getLogger("tollgate.api")

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Response:
    """A handler's answer when it needs headers of its own (ETag, caching)."""

    status: int
    payload: JsonBody | bytes | None  # bytes: sent as they are
    headers: dict[str, str]


Handler = Callable[["Request"], Awaitable["tuple[int, JsonBody | None] | Response"]]
# The caller's key from its Authorization header (None: no header); raises
# ApiError 401 for a key that is not valid.
Authenticator = Callable[[bytes | None], Awaitable[Any]]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[bytes, bytes]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    key: Any = None  # what the app's Authenticator returned
    request_id: str = ""  # as sent back in X-Request-Id
    client: str | None = None  # the client's address as the ASGI server gives it
    query_string: bytes = b""  # as sent: `query` keeps one value of each name

    def json(self) -> JsonBody:
        return json_object(self.body)

    def query_all(self, name: str) -> list[str]:
        """Every value of a repeated query parameter, in order, decoded as `query`."""
        return [
            _text(value.replace(b"+", b" "))
            for key, _, value in (pair.partition(b"=") for pair in self.query_string.split(b"&"))
            if value and _text(key.replace(b"+", b" ")) == name
        ]


def json_object(body: bytes) -> JsonBody:
    """A request body as a JSON object; money-safe (numbers with a fraction
    become Decimal); ApiError 400 when it is not one."""
    try:
        data = _DECODER.decode(body.decode("utf-8"))
    except RepeatedName as exc:
        raise ApiError(400, "malformed_json", str(exc)) from None
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "The body is not valid JSON.") from None
    except ArithmeticError:
        # Decimal cannot hold a number like 1e999999999999999999999, which
        # the JSON grammar allows: InvalidOperation is not a ValueError.
        raise ApiError(400, "malformed_json", "A number in the body is out of range.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "The body must be a JSON object.")
    return data


_throttle: FailureThrottle | None = None


def _key_failures() -> FailureThrottle:
    global _throttle
    if _throttle is None:
        _throttle = FailureThrottle(settings.API_AUTH_FAILURES_PER_MINUTE, 60.0)
    return _throttle


def _json_default(value: Any) -> str:
    if isinstance(value, Decimal):
        return usd_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class RepeatedName(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose names are unique. JSON leaves repeats undefined and
    parsers differ (first or last wins): a proxy that checked one value while
    Tollgate used the other could be walked past, so a repeat is refused."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise RepeatedName(f"The name {json.dumps(name)} appears twice in one object.")
            seen.add(name)
    return obj


# Built once: json.loads with arguments builds a new decoder on every call.
_DECODER = json.JSONDecoder(
    parse_float=Decimal, parse_constant=_reject_constant, object_pairs_hook=_object
)


def _text(raw: bytes) -> str:
    """Percent-decoded UTF-8; bytes that are not UTF-8 stay as lone surrogates
    (surrogateescape), which validation refuses as invalid text, instead of
    turning into U+FFFD, which would pass and make different names collide."""
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def _query(raw: bytes) -> dict[str, str]:
    """The query string as parse_qsl reads it (the last value of a name wins,
    blank values are dropped), decoded like the path (`_text`)."""
    query: dict[str, str] = {}
    for pair in raw.split(b"&"):
        name, _, value = pair.partition(b"=")
        if value:
            query[_text(name.replace(b"+", b" "))] = _text(value.replace(b"+", b" "))
    return query


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    pattern: re.Pattern[str]
    handler: Handler
    authenticated: bool = True


def route(method: str, path: str, handler: Handler, *, authenticated: bool = True) -> Route:
    """`path` may hold `{name}` segments, matched as one path segment each."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return Route(method, path, re.compile(f"^{regex}$"), handler, authenticated)


class ApiApp:
    """ASGI app: serves `routes`, hands every other HTTP request to `fallback`."""

    def __init__(
        self,
        routes: list[Route],
        fallback: Callable[..., Awaitable[None]],
        authenticate: Authenticator,
    ) -> None:
        self.routes = routes
        self.fallback = fallback
        self.authenticate = authenticate
        # Cheap first test that sends admin, dashboard and static requests to Django.
        self.prefixes = tuple({r.path.split("{")[0] for r in routes})

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        if scope["type"] != "http" or not path.startswith(self.prefixes):
            await self._fall_back(scope, receive, send)
            return
        # The server decoded the path with U+FFFD for bytes that are not UTF-8;
        # the route's parameters are taken from the raw bytes instead.
        raw_path = scope.get("raw_path")
        if raw_path is not None:
            path = _text(raw_path)
        matched_path = False
        for candidate in self.routes:
            match = candidate.pattern.match(path)
            if match is None:
                continue
            matched_path = True
            if candidate.method == scope["method"]:
                await self._serve(candidate, match.groupdict(), scope, receive, send)
                return
        if matched_path:
            await _send_json(
                send,
                405,
                ApiError(405, "method_not_allowed", "Method not allowed.").body(),
                new_request_id(dict(scope["headers"]).get(b"x-request-id")),
            )
        else:
            await self._fall_back(scope, receive, send)

    async def _fall_back(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            request_id = new_request_id(headers.get(b"x-request-id"))
            # Set here, not only in RequestIdMiddleware (which reuses it):
            # Django logs 4xx/5xx answers after its middleware has returned.
            log_context.request_id.set(request_id)
            # Django reads a whole body before its view runs, spooling it to a
            # temporary file past FILE_UPLOAD_MAX_MEMORY_SIZE, and has no read
            # timeout: the body is read here first, within its size and time.
            # Past DATA_UPLOAD_MAX_MEMORY_SIZE Django would refuse it anyway
            # (Tollgate takes no file uploads), but only once it was all read.
            try:
                body = await _read_body(headers, receive, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
            except ApiError as exc:
                await _send_json(send, exc.status, exc.body(), request_id, _closing(exc))
                return
            receive = _replay(body, receive)
        await self.fallback(scope, receive, send)

    async def _serve(
        self, route_: Route, params: dict[str, str], scope: dict, receive: Callable, send: Callable
    ) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = new_request_id(headers.get(b"x-request-id"))
        # Each request runs in its own task: the id stays with this request's logs.
        log_context.request_id.set(request_id)
        extra_headers: dict[str, str] | None = None
        try:
            body = await _read_body(headers, receive, MAX_BODY_BYTES)
            request = Request(
                method=scope["method"],
                path=scope["path"],
                query=_query(scope.get("query_string", b"")),
                query_string=scope.get("query_string", b""),
                headers=headers,
                body=body,
                params=params,
                request_id=request_id,
                client=(scope.get("client") or (None,))[0],
            )
            db.start_request_clock()  # key lookup and handler share the time budget
            if route_.authenticated:
                request.key = await self._authenticate(headers, scope)
            answer = await route_.handler(request)
            if isinstance(answer, Response):
                status, payload, extra_headers = answer.status, answer.payload, answer.headers
            else:
                status, payload = answer
        except ApiError as exc:
            status, payload = exc.status, exc.body()
            if "retry_after" in exc.extra:
                extra_headers = {"retry-after": str(exc.extra["retry_after"])}
            extra_headers = _closing(exc, extra_headers)
        except db.StoreUnavailable as exc:
            logger.warning("store unavailable: %s", exc)
            status, payload = (
                503,
                ApiError(
                    503, "store_unavailable", "The budget store did not answer in time."
                ).body(),
            )
        except Exception:
            logger.exception("unhandled error path=%s", scope["path"])
            status, payload = 500, ApiError(500, "internal_error", "Internal error.").body()
        extra_headers = _with_server_time(extra_headers, time.perf_counter() - started)
        if isinstance(payload, bytes):  # pre-rendered (GET /metrics)
            await _send_bytes(send, status, payload, request_id, extra_headers)
        else:
            await _send_json(send, status, payload, request_id, extra_headers)
        metrics.labelled(metrics.REQUESTS, route_.path, route_.method, status).inc()
        metrics.labelled(metrics.LATENCY, route_.path).observe(time.perf_counter() - started)

    async def _authenticate(self, headers: dict[bytes, bytes], scope: dict) -> Any:
        """The caller's key; 429 for a network that sent too many bad keys."""
        client = client_network((scope.get("client") or ("unknown",))[0])
        throttle = _key_failures()
        wait = throttle.retry_after(client)
        if wait is not None:
            raise ApiError(
                429,
                "rate_limited",
                f"Too many requests with an invalid API key; retry in {int(wait) + 1} s.",
                retry_after=int(wait) + 1,
            )
        try:
            return await self.authenticate(headers.get(b"authorization"))
        except ApiError as exc:
            if exc.status == 401:
                throttle.record_failure(client)
            raise

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await db.close_pool()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"The body is larger than {_size_text(max_bytes)}.")


async def _read_body(headers: dict[bytes, bytes], receive: Callable, max_bytes: int) -> bytes:
    """The whole body, or ApiError: 413 when Content-Length or the bytes
    received so far pass `max_bytes` (nothing past it is kept), 408 when it
    has not all arrived within API_BODY_TIMEOUT_SECONDS."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    # A client that announces a body and stops sending it would hold the
    # request open for ever (the server has no read timeout of its own).
    limit = settings.API_BODY_TIMEOUT_SECONDS
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise ApiError(
                408, "request_timeout", f"The body did not arrive within {limit:g} s."
            ) from None
        if message["type"] == "http.disconnect":
            raise ApiError(400, "malformed_json", "The client disconnected before the body ended.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _size_text(size: int) -> str:
    mib = size / (1024 * 1024)
    return f"{mib:g} MiB" if mib >= 1 else f"{size} bytes"


# After these the rest of the request is not read: the connection is closed
# instead of the server reading (and dropping) what the client still sends.
_CLOSES_CONNECTION = frozenset({408, 413})


def _closing(error: ApiError, headers: dict[str, str] | None = None) -> dict[str, str] | None:
    if error.status not in _CLOSES_CONNECTION:
        return headers
    return {**(headers or {}), "connection": "close"}


def _replay(body: bytes, receive: Callable) -> Callable:
    """`receive` for an app downstream: the body already read, as one
    message, then the server's own messages (the disconnect)."""
    pending = True

    async def replayed() -> dict:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _with_server_time(headers: dict[str, str] | None, seconds: float) -> dict[str, str]:
    """`Server-Timing: app;dur=<ms>`: the time from the request's dispatch to
    its answer, so that a client can tell the server's time from the network's
    and its own (beside a metric the handler set: the summary's desc)."""
    app = f"app;dur={seconds * 1000:.2f}"
    headers = dict(headers or {})
    earlier = headers.get("server-timing")
    headers["server-timing"] = f"{earlier}, {app}" if earlier else app
    return headers


async def _send_bytes(
    send: Callable,
    status: int,
    body: bytes,
    request_id: str,
    extra_headers: dict[str, str] | None,
) -> None:
    headers = [(b"x-request-id", request_id.encode()), (b"content-length", str(len(body)).encode())]
    headers.extend((name.encode(), value.encode()) for name, value in (extra_headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(
    send: Callable,
    status: int,
    payload: JsonBody | None,
    request_id: str,
    extra_headers: dict[str, str] | None = None,
) -> None:
    headers = [(b"x-request-id", request_id.encode()), (b"x-content-type-options", b"nosniff")]
    extra = {"cache-control": "no-store", **(extra_headers or {})}
    headers.extend((name.encode(), value.encode()) for name, value in extra.items())
    if payload is None:
        body = b""
    else:
        try:
            body = orjson.dumps(payload, default=_json_default)
        except orjson.JSONEncodeError:
            # orjson refuses lone surrogates, which a request may carry as
            # JSON escapes ({"\ud800": 1}) and an error echoes in its field
            # name; the standard encoder writes them back as escapes.
            body = json.dumps(payload, default=_json_default, separators=(",", ":")).encode()
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
