"""An open-loop (fixed-rate) HTTP load generator for compare.py.

    .venv/bin/python -m loadtests.harness.openloop --port 18765 --rate 1000 --duration 10

Why not wrk: wrk is closed-loop. Each connection sends its next request only
when the previous answer arrived, so when the server stalls, wrk stops
sending and never records the requests it would have sent meanwhile
(coordinated omission): a fixed-rate run with wrk under-reports the tail.
wrk2 (which corrects this) is not packaged by Debian. This generator sends
request i at start + i / rate whatever happened before, and measures each
latency from that scheduled time, not from when the request left: a request
that waited for a free connection, or in a server's queue, is charged for it.

How: one asyncio process (uvloop when installed), HTTP/1.1 keep-alive
connections parsed with httptools (C), no pipelining. A request that is due
takes an idle connection (the most recently used, so spare ones go idle and
close); with none idle, a new one is opened, up to --max-connections; beyond
that it waits in a queue, still on the clock. A request not answered within
--timeout of its scheduled time counts as a timeout (its connection is
closed). Timeouts, lost connections and non-2xx answers count as infinitely
slow in the percentiles (null in the result), so p99 reads "failed" once more
than 1% of requests failed: a fast 429 or 503 is not a fast decision. Requests are spread over the same bench teams and users
as loadtests/wrk/reservations.lua.

Its own cost is printed with the result: CPU used (share of one core) and
the send lag (how late requests left against their schedule; that lag is
part of every latency it reports). compare.py runs it against the raw ASGI
floor up to 2000 RPS, which shows both. Only 127.0.0.1 is ever targeted.

Prints one line `OPENLOOP_RESULT {json}`; latencies are in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httptools

from loadtests.harness.seed import request_body, scenario

HOST = "127.0.0.1"
PATH = "/v1/budget/reservations"
# How often in-flight and queued requests are checked against the timeout.
TIMEOUT_SWEEP_SECONDS = 0.02
# After a failed connect, wait this long before opening another one.
CONNECT_BACKOFF_SECONDS = 0.1


def request_bytes(key: str, teams: int, users: int, budgets: str = "org") -> list[bytes]:
    """Every request, encoded once: the same bodies as reservations.lua."""
    requests = []
    for t in range(1, teams + 1):
        for u in range(1, users + 1):
            body = request_body(t, u, budgets).encode()
            head = (
                f"POST {PATH} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            requests.append(head + body)
    return requests


@dataclass
class Tally:
    """What one phase (warm-up or run) saw."""

    scheduled: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # of 2xx answers
    send_lag_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: {"connect": 0, "read": 0, "timeout": 0})


class Connection(asyncio.Protocol):
    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.scheduled: float | None = None  # of the request in flight
        self.tally: Tally | None = None
        self.keep_alive = True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail("read")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.scheduled is not None:
            self._fail("read")
        self.generator.forget(self)

    # httptools callbacks

    def on_message_complete(self) -> None:
        status = str(self.parser.get_status_code())
        self.keep_alive = self.parser.should_keep_alive()
        scheduled, tally = self.scheduled, self.tally
        self.scheduled = self.tally = None
        if scheduled is not None and tally is not None:
            if status.startswith("2"):
                tally.latencies_ms.append((time.monotonic() - scheduled) * 1000)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
        self.generator.done(self)

    # ours

    def send(self, request: bytes, scheduled: float, tally: Tally) -> None:
        self.scheduled, self.tally = scheduled, tally
        tally.send_lag_ms.append((time.monotonic() - scheduled) * 1000)
        self.transport.write(request)  # type: ignore[union-attr]

    def _fail(self, kind: str) -> None:
        if self.scheduled is not None and self.tally is not None:
            self.tally.errors[kind] += 1
        self.scheduled = self.tally = None
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()


class Generator:
    def __init__(self, port: int, requests: list[bytes], max_connections: int, timeout: float):
        self.port = port
        self.requests = requests
        self.max_connections = max_connections
        self.timeout = timeout
        self.idle: list[Connection] = []  # a stack: the most recently used on top
        self.busy: set[Connection] = set()
        self.opening = 0
        self.connected = 0
        self.peak_connections = 0
        self.backoff_until = 0.0
        self.queue: deque[tuple[float, Tally]] = deque()  # (scheduled, phase) not yet sent
        self.counter = 0
        self.tasks: set[asyncio.Task] = set()  # connects under way (a reference keeps them alive)

    # Scheduling

    async def phase(self, rate: float, seconds: float) -> Tally:
        """Send `rate` requests per second for `seconds`, then wait for the
        answers (at most --timeout after the last scheduled send)."""
        tally = Tally()
        total = max(int(rate * seconds), 1)
        interval = 1.0 / rate
        start = time.monotonic() + 0.01
        sent = 0
        sweeper = asyncio.get_running_loop().create_task(self._sweep_timeouts())
        try:
            while sent < total:
                now = time.monotonic()
                due = min(total, int((now - start) / interval) + 1) if now >= start else 0
                while sent < due:
                    self.queue.append((start + sent * interval, tally))
                    sent += 1
                self.dispatch()
                # Sleeps overshoot by up to a millisecond (the event loop's
                # timer resolution); the send lag in the result shows by how much.
                await asyncio.sleep(max(start + sent * interval - time.monotonic(), 0))
            tally.scheduled = total
            deadline = start + total * interval + self.timeout + 0.2
            # Polling: answers and timeouts both end the wait, and it is short.
            while (self.queue or self._in_flight(tally)) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        finally:
            sweeper.cancel()
        return tally

    def _in_flight(self, tally: Tally) -> bool:
        return any(c.tally is tally for c in self.busy)

    def dispatch(self) -> None:
        while self.queue and self.idle:
            connection = self.idle.pop()
            scheduled, tally = self.queue.popleft()
            self.busy.add(connection)
            self.counter += 1
            connection.send(self.requests[self.counter % len(self.requests)], scheduled, tally)
        room = self.max_connections - self.connected - self.opening
        wanted = min(len(self.queue) - self.opening, room)
        if wanted > 0 and time.monotonic() >= self.backoff_until:
            loop = asyncio.get_running_loop()
            for _ in range(wanted):
                self.opening += 1
                task = loop.create_task(self._open())
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _transport, connection = await loop.create_connection(
                lambda: Connection(self), HOST, self.port
            )
        except OSError:
            self.opening -= 1
            self.backoff_until = time.monotonic() + CONNECT_BACKOFF_SECONDS
            if self.queue:
                self.queue[0][1].errors["connect"] += 1
            return
        self.opening -= 1
        self.connected += 1
        self.peak_connections = max(self.peak_connections, self.connected)
        self.idle.append(connection)
        self.dispatch()

    async def _sweep_timeouts(self) -> None:
        while True:
            await asyncio.sleep(TIMEOUT_SWEEP_SECONDS)
            limit = time.monotonic() - self.timeout
            while self.queue and self.queue[0][0] < limit:
                _scheduled, tally = self.queue.popleft()
                tally.errors["timeout"] += 1
            for connection in [c for c in self.busy if (c.scheduled or math.inf) < limit]:
                connection._fail("timeout")

    # Called by connections

    def done(self, connection: Connection) -> None:
        self.busy.discard(connection)
        if connection.keep_alive:
            self.idle.append(connection)
        elif connection.transport is not None:
            connection.transport.close()
        self.dispatch()

    def forget(self, connection: Connection) -> None:
        self.busy.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        self.connected -= 1

    def close(self) -> None:
        for connection in [*self.idle, *self.busy]:
            if connection.transport is not None:
                connection.transport.close()


def percentile(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile; math.inf when it falls on a failed request."""
    if not sorted_ms:
        return math.inf
    rank = max(math.ceil(p / 100 * len(sorted_ms)) - 1, 0)
    return sorted_ms[rank]


def summary(tally: Tally, rate: float, seconds: float, cpu_seconds: float) -> dict[str, Any]:
    answered = sum(tally.statuses.values())
    ok = len(tally.latencies_ms)
    failed = sum(tally.errors.values()) + answered - ok
    # A timeout, a lost connection or a non-2xx answer is no decision: it is
    # infinitely slow, and a percentile that lands on one says so (None).
    latencies = sorted(tally.latencies_ms) + [math.inf] * failed
    lag = sorted(tally.send_lag_ms)

    def finite(value: float) -> float | None:
        return None if math.isinf(value) else round(value, 3)

    return {
        "rate": rate,
        "duration_s": seconds,
        "scheduled": tally.scheduled,
        "answered": answered,
        "ok": ok,
        "statuses": tally.statuses,
        "errors": tally.errors,
        **{f"p{p}_ms": finite(percentile(latencies, p)) for p in (50, 90, 95, 99)},
        "max_ms": finite(latencies[-1]) if latencies else None,
        "send_lag_p50_ms": finite(percentile(lag, 50)),
        "send_lag_p99_ms": finite(percentile(lag, 99)),
        "generator_cpu_pct": round(100 * cpu_seconds / seconds, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    key = os.environ.get("TOLLGATE_API_KEY", "")
    requests = request_bytes(
        key,
        int(os.environ.get("BENCH_TEAMS", "20")),
        int(os.environ.get("BENCH_USERS_PER_TEAM", "10")),
        scenario(),
    )
    generator = Generator(args.port, requests, args.max_connections, args.timeout)
    try:
        if args.warmup > 0:
            await generator.phase(min(args.rate, args.warmup_rate), args.warmup)
        before = os.times()
        tally = await generator.phase(args.rate, args.duration)
        after = os.times()
    finally:
        generator.close()
    cpu = (after.user - before.user) + (after.system - before.system)
    result = summary(tally, args.rate, args.duration, cpu)
    result["peak_connections"] = generator.peak_connections
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.harness.openloop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, required=True, help=f"port on {HOST}")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up first")
    parser.add_argument(
        "--warmup-rate", type=float, default=100, help="warm-up rate (at most --rate)"
    )
    parser.add_argument("--timeout", type=float, default=5, help="seconds from scheduled time")
    parser.add_argument("--max-connections", type=int, default=256)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main_async(args))
    else:
        result = uvloop.run(main_async(args))
    print("OPENLOOP_RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
