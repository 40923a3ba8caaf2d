"""The open-loop generator of compare.py measures from the scheduled send
time: a server stall is charged to every request that should have been sent
during it, not only to the one that was on the wire (coordinated omission)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httptools
import pytest

from loadtests.harness import openloop


class _StallingServer(asyncio.Protocol):
    """HTTP/1.1 keep-alive; answers at once, except that the whole server
    freezes once (like a GC pause or a lock) for `stall` seconds."""

    def __init__(self, stall_at: list[float], stall: float, answer: bytes | None) -> None:
        self.stall_at, self.stall, self.answer = stall_at, stall, answer
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self.answer is None:
            return
        if self.stall_at and time.monotonic() >= self.stall_at[0]:
            self.stall_at.clear()
            time.sleep(self.stall)  # blocks the server's event loop on purpose
        self.transport.write(self.answer)


CREATED = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"
TOO_MANY = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}"


def _serve(stall_after: float, stall: float, answer: bytes | None = CREATED) -> Iterator[int]:
    loop = asyncio.new_event_loop()
    stall_at = [time.monotonic() + stall_after]
    server = loop.run_until_complete(
        loop.create_server(lambda: _StallingServer(stall_at, stall, answer), "127.0.0.1", 0)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        server.close()


@pytest.fixture
def stalling_port() -> Iterator[int]:
    # Warm-up is off in the runs below, so the stall lands in the measured phase.
    yield from _serve(stall_after=0.8, stall=0.4)


@pytest.fixture
def silent_port() -> Iterator[int]:
    yield from _serve(stall_after=1e9, stall=0, answer=None)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    yield from _serve(stall_after=1e9, stall=0, answer=TOO_MANY)


def _run(port: int, *extra: str) -> dict:
    args = openloop.parse_args(["--port", str(port), "--warmup", "0", *extra])
    return asyncio.run(openloop.main_async(args))


def test_a_stall_is_charged_to_every_request_scheduled_during_it(stalling_port):
    result = _run(stalling_port, "--rate", "200", "--duration", "2", "--timeout", "3")

    assert result["scheduled"] == 400
    assert result["ok"] == 400
    # ~80 requests were due during the 0.4 s freeze: about a fifth of the run
    # waited up to 400 ms. A closed-loop count would show one slow request.
    assert result["p90_ms"] >= 100, result
    assert result["p99_ms"] >= 300, result
    assert result["p50_ms"] < 100, result


def test_unanswered_requests_are_timeouts_and_infinitely_slow(silent_port):
    result = _run(silent_port, "--rate", "50", "--duration", "1", "--timeout", "0.5")

    assert result["scheduled"] == 50
    assert result["answered"] == 0
    assert result["errors"]["timeout"] == 50
    assert result["p50_ms"] is None and result["p99_ms"] is None


def test_fast_error_answers_are_failures_not_fast_decisions(refusing_port):
    result = _run(refusing_port, "--rate", "50", "--duration", "1")

    assert result["answered"] == 50
    assert result["ok"] == 0
    assert result["statuses"] == {"429": 50}
    assert result["p50_ms"] is None
