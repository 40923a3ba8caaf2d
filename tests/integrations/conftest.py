"""Fixtures of the Python client's tests: clients of the shared live server,
prices for the models the tests name, and a small HTTP proxy in front of the
server that can fail on purpose (answer 503, hang, drop the connection after
the server has done the work), so that the client's retries and failure
policy meet real sockets."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import pytest
from tollgate_client import Tollgate

from tests.integrations.fake_providers import FakeProvider, FakeProviderServer
from tracking.models import Price

# Generous: the shared CI box runs other engineers' suites beside this one.
TIMEOUT_MS = 10_000


def per_million(usd: str) -> Decimal:
    return Decimal(usd) / 1_000_000


@pytest.fixture
def prices(transactional_db) -> None:
    """tg-chat (OpenAI) and tg-claude (Anthropic): $1/M input, $10/M output,
    cache reads $0.50/M, cache writes $2/M."""
    for model, provider in (("tg-chat", "openai"), ("tg-claude", "anthropic")):
        Price.objects.create(
            provider=provider,
            model=model,
            effective_from="2000-01-01T00:00:00Z",
            input_per_token=per_million("1"),
            output_per_token=per_million("10"),
            cache_read_per_token=per_million("0.5"),
            cache_write_per_token=per_million("2"),
        )


@pytest.fixture
def tollgate(server, key) -> Iterator[Tollgate]:
    with Tollgate(server.url, key, timeout_ms=TIMEOUT_MS) as client:
        yield client


# -- the faulty proxy ------------------------------------------------------------


@dataclass
class FaultyProxy:
    """Forwards to `upstream`, except that each request first takes the next
    fault of `faults` (while any remain):

    - "503": answers 503 store_unavailable without forwarding;
    - "hang": waits `hang_seconds`, then answers 503;
    - "lost": forwards, then closes the connection without answering (the
      server did the work; the client cannot know);
    - "lost-503": forwards, then answers 503.
    """

    upstream: str
    url: str = ""
    faults: list[str] = field(default_factory=list)
    hang_seconds: float = 5.0
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)
    forwarded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> str | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None


def _handler(proxy: FaultyProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            proxy.seen.append((self.command, self.path, body))
            fault = proxy.next_fault()
            if fault == "503":
                return self._answer(
                    503, b'{"error": {"code": "store_unavailable", "message": "x"}}'
                )
            if fault == "hang":
                time.sleep(proxy.hang_seconds)
                return self._answer(
                    503, b'{"error": {"code": "store_unavailable", "message": "x"}}'
                )
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
            }
            upstream = httpx.request(
                self.command, proxy.upstream + self.path, content=body, headers=headers, timeout=30
            )
            with proxy.lock:
                proxy.forwarded += 1
            if fault == "lost":
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            if fault == "lost-503":
                return self._answer(
                    503, b'{"error": {"code": "store_unavailable", "message": "x"}}'
                )
            return self._answer(upstream.status_code, upstream.content)

        def _answer(self, status: int, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting ("hang")

        do_GET = do_POST = do_PUT = do_DELETE = _any

    return Handler


@pytest.fixture
def faulty_proxy(server) -> Iterator[Callable[..., FaultyProxy]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def factory(*faults: str, hang_seconds: float = 5.0) -> FaultyProxy:
        proxy = FaultyProxy(upstream=server.url, faults=list(faults), hang_seconds=hang_seconds)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        proxy.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        return proxy

    yield factory
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    """A fake OpenAI + Anthropic API on loopback."""
    server = FakeProviderServer()
    yield server.fake
    server.stop()
