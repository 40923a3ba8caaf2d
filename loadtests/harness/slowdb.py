"""A "slow database" for compare.py: a TCP proxy that adds latency to every round trip.

    .venv/bin/python -m loadtests.harness.slowdb --port 15499 --delay-ms 20

Listens on 127.0.0.1 and forwards to the embedded PostgreSQL's unix socket
(or any --upstream socket path). Every byte from a client reaches PostgreSQL
`--delay-ms` after it arrived, in order; answers come back at once. So each
database round trip (a statement, BEGIN, COMMIT, a pool's health check) takes
that much longer, as with a database across a slow network, and a design
pays in proportion to how many round trips a request makes, and to how many
of them it makes while holding a row lock.

Why a proxy and not `SELECT pg_sleep(0.02)` in each design: a per-request
sleep would have to be written into each design (a different code path from
the one measured) and would charge a design with one round trip per request
the same as one with eight. The proxy changes nothing in the designs: they
only get a DATABASE_URL pointing at it.

It also counts round trips: every Query ('Q') or Sync ('S') message a client
sends ends one (the designs here use neither pipelining nor COPY).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import struct
import sys
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"
# Untyped messages a client may send before its startup packet.
_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104


class RoundTripCounter:
    """Follows the message framing of one client's stream of bytes."""

    def __init__(self) -> None:
        self.buffer = b""
        self.started = False  # after the startup packet, messages carry a type byte
        self.count = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if not self.started:
                if len(self.buffer) < 8:
                    return
                length, code = struct.unpack("!II", self.buffer[:8])
                if len(self.buffer) < length:
                    return
                self.buffer = self.buffer[length:]
                if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self.started = True
                continue
            if len(self.buffer) < 5:
                return
            kind = self.buffer[:1]
            (length,) = struct.unpack("!I", self.buffer[1:5])
            if len(self.buffer) < 1 + length:
                return
            self.buffer = self.buffer[1 + length :]
            if kind in (b"Q", b"S"):
                self.count += 1


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class _Client(asyncio.Protocol):
    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        self.delayed: collections.deque[tuple[float, bytes]] = collections.deque()
        self.upstream: asyncio.Transport | None = None
        self.counter = RoundTripCounter()
        self.closing = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.proxy.counters.append(self.counter)
        self.connecting = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            upstream, _ = await self.loop.create_unix_connection(
                lambda: _Upstream(self), self.proxy.upstream
            )
        except OSError:
            self.transport.close()
            return
        self.upstream = upstream  # type: ignore[assignment]
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.counter.feed(data)
        # time.monotonic(), not loop.time(): uvloop's clock is the loop's
        # cached millisecond one, and with it a round trip once took 49.95 ms
        # of a 50 ms delay. A timer that fires early is armed again.
        self.delayed.append((time.monotonic() + self.proxy.delay, data))
        if self.timer is None:
            self._arm()

    def _arm(self) -> None:
        self.timer = self.loop.call_later(
            max(self.delayed[0][0] - time.monotonic(), 0.0), self._flush
        )

    def _flush(self) -> None:
        self.timer = None
        if self.upstream is None:
            return  # _connect flushes once connected
        now = time.monotonic()
        while self.delayed and self.delayed[0][0] <= now:
            self.upstream.write(self.delayed.popleft()[1])
        if self.delayed:
            self._arm()
        elif self.closing:
            self.upstream.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # Bytes still on their way (a Terminate message) go out before the close.
        self.closing = True
        if self.upstream is not None and not self.delayed:
            self.upstream.close()


class DelayProxy:
    """The proxy on its own event loop in a background thread."""

    def __init__(self, port: int, upstream: str, delay_ms: float) -> None:
        self.port = port
        self.upstream = upstream
        self.delay = delay_ms / 1000
        self.counters: list[RoundTripCounter] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def round_trips(self) -> int:
        return sum(c.count for c in list(self.counters))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="slowdb-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        loop = _new_loop()
        self._loop = loop
        try:
            server = loop.run_until_complete(
                loop.create_server(lambda: _Client(self), HOST, self.port)
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def socket_path(connection_params: dict) -> str:
    """The unix socket of a libpq-style host directory and port."""
    host = str(connection_params.get("host") or "")
    if not host.startswith("/"):
        raise ValueError(f"the database is not on a unix socket (host {host!r})")
    return str(Path(host) / f".s.PGSQL.{connection_params.get('port') or 5432}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.harness.slowdb", description=__doc__)
    parser.add_argument("--port", type=int, default=15499, help=f"port on {HOST}")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--upstream", help="unix socket path (default: the embedded server's)")
    args = parser.parse_args(argv)
    upstream = args.upstream
    if upstream is None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        import django

        django.setup()
        from django.db import connection

        upstream = socket_path(connection.get_connection_params())
    proxy = DelayProxy(args.port, upstream, args.delay_ms)
    proxy.start()
    print(f"{HOST}:{args.port} -> {upstream}, +{args.delay_ms:g} ms per round trip; Ctrl-C stops")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        print(f"{proxy.round_trips()} round trips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
