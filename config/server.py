"""uvicorn's httptools protocol with limits on a request's line and headers.

httptools (llhttp) has no limit on the request target, the number of headers
or their size, and uvicorn adds none: a request with 50,000 headers (~1 MB)
is parsed whole, header by header through a Python callback, then handed to
the app, which builds a dict of them (Django builds its META), all on the
event loop that also serves the holds. Nor does uvicorn time a request's
headers: a client that sends them a byte at a time holds its connection open
for as long as it likes. None of this can be stopped in the ASGI app, which
is called only once the headers are complete, so it is stopped here, while
reading:

- the request target longer than HTTP_MAX_REQUEST_LINE_BYTES: 414;
- more than HTTP_MAX_HEADERS headers, or more than HTTP_MAX_HEADER_BYTES of
  header names and values: 431, as soon as the parser reaches the header past
  the limit (the rest of the request is never parsed);
- the headers not complete HTTP_HEADER_TIMEOUT_SECONDS after the request's
  first byte: 408;
- a new connection that sends nothing is closed after uvicorn's keep-alive
  timeout (`--timeout-keep-alive`), as an idle one between requests is.

Each refusal is answered in the API's error shape and closes the connection.
Body size and body time are the ASGI layer's (config/hotpath/router.py), so
that they hold under any server.

Served with `uvicorn … --http config.server:LimitedHttpToolsProtocol`, the
command of docs/operations.md; `manage.py demo` uses it too.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from config.hotpath.errors import ApiError

# What `--http` names in the production command and in `manage.py demo`.
PROTOCOL = "config.server:LimitedHttpToolsProtocol"


def server_command(addrport: str, *options: str) -> list[str]:
    """The production command of docs/operations.md on `addrport` (one
    worker unless `options` say otherwise), as `manage.py demo` runs it."""
    host, _, port = addrport.rpartition(":")
    return [
        *(sys.executable, "-m", "uvicorn", "config.asgi:application"),
        *("--host", host or "127.0.0.1", "--port", port, "--loop", "uvloop", "--http", PROTOCOL),
        *options,
    ]


@dataclass(frozen=True)
class Limits:
    request_line_bytes: int
    headers: int
    header_bytes: int
    header_timeout: float

    @property
    def head_bytes(self) -> int:
        """Raw bytes a request's line and headers may take: the limits plus
        each header's separators (`: ` and CRLF)."""
        return self.request_line_bytes + self.header_bytes + 4 * (self.headers + 1)


_limits: Limits | None = None


def limits() -> Limits:
    """Read once per process, from settings (loaded with the app, before
    the first connection)."""
    global _limits
    if _limits is None:
        from django.conf import settings

        _limits = Limits(
            settings.HTTP_MAX_REQUEST_LINE_BYTES,
            settings.HTTP_MAX_HEADERS,
            settings.HTTP_MAX_HEADER_BYTES,
            settings.HTTP_HEADER_TIMEOUT_SECONDS,
        )
    return _limits


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; httptools re-raises it
    from feed_data as an HttpParserCallbackError."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits()
        # Reading a request's line and headers (or waiting for its first byte).
        self.in_head = True
        self.head_bytes = 0
        self.header_count = 0
        self.header_bytes = 0
        # When the current request's first byte arrived (None: not in a head).
        self.head_started: float | None = None
        self.head_timer: asyncio.TimerHandle | None = None
        self.refusal: ApiError | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response, so a
        # connection that never sends a byte would stay open for ever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            if self.head_started is None:
                self.head_started = self.loop.time()
                # One timer per connection, re-armed only when it fires during
                # a head: a timer per request would cost every hold.
                if self.head_timer is None:
                    self.head_timer = self.loop.call_later(
                        self.limits.header_timeout, self._check_head
                    )
            self.head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self.refusal is not None:
                self._refuse(self.refusal)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        # A single header line too long to end within this chunk never
        # reaches on_header; the bytes still waiting for the headers' end do.
        if self.in_head and self.head_bytes > self.limits.head_bytes:
            self._refuse(_too_large("The request's headers are larger than allowed."))

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True
        self.header_count = self.header_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.request_line_bytes:
            self.refusal = ApiError(
                414,
                "uri_too_long",
                f"The request target is longer than {self.limits.request_line_bytes} bytes.",
            )
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.header_bytes += len(name) + len(value)
        if self.header_count > self.limits.headers:
            self.refusal = _too_large(f"The request has more than {self.limits.headers} headers.")
            raise _Refused
        if self.header_bytes > self.limits.header_bytes:
            self.refusal = _too_large(
                f"The request's headers are larger than {self.limits.header_bytes} bytes."
            )
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_started = None
        self.in_head = False
        self.head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What comes next on this connection is the next request's head.
        self.in_head = True
        self.head_bytes = 0

    # Ours

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _check_head(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.head_started is None:
            return  # the next request's first byte arms it again
        waited = self.loop.time() - self.head_started
        if waited < self.limits.header_timeout:
            # This head began after the timer was armed, for an earlier one.
            self.head_timer = self.loop.call_later(
                self.limits.header_timeout - waited, self._check_head
            )
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's head is late while the answer to the one
            # before it is still being written: no room for a 408 there.
            self.transport.close()
            return
        timeout = self.limits.header_timeout
        self._refuse(
            ApiError(
                408,
                "request_timeout",
                f"The request's headers did not arrive within {timeout:g} s.",
            )
        )

    def _refuse(self, error: ApiError) -> None:
        """Answer `error` in the API's shape and close the connection."""
        self.logger.warning(
            "refused a request from %s: %s %s",
            self.client[0] if self.client else "?",
            error.status,
            error.code,
        )
        body = json.dumps(error.body()).encode()
        content = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


def _too_large(message: str) -> ApiError:
    return ApiError(431, "headers_too_large", message)
