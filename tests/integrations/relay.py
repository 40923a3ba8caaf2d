"""A TCP relay on loopback in front of a live server, which a test switches
between the ways a service stops answering: what stands between the LiteLLM
adapter and Tollgate in test_litellm_proxy.py.

- `up`: relays bytes both ways, unchanged (HTTP keep-alive included);
- `down`: nothing listens on its port (connections are refused) and open
  connections are cut, as when Tollgate's process is gone;
- `hang`: takes connections and reads their requests, but never answers, as
  when Tollgate or the network stalls: the client's timeout decides.

Switching cuts every open connection, so that a client's pooled connections
meet the new state at their next request. The relay keeps its port across
switches. It runs an event loop in a daemon thread of the test process.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Literal
from urllib.parse import urlsplit

Mode = Literal["up", "down", "hang"]


class Relay:
    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self.target = (target.hostname or "127.0.0.1", target.port or 80)
        self.mode: Mode = "up"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._run(self._listen())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: Mode) -> None:
        self._run(self._switch(mode))

    def stop(self) -> None:
        self._run(self._switch("down"))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self, work) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    async def _listen(self) -> None:
        # The same port each time (SO_REUSEADDR): the proxy was started with it.
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _switch(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "down" and self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.close()
        self._open.clear()
        if mode != "down" and self._server is None:
            await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        if self.mode == "hang":
            try:
                while await reader.read(65536):
                    pass  # until the client gives up, or a switch cuts it
            except ConnectionError:
                pass
            finally:
                self._close(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._close(writer)
            return
        self._open.add(upstream_writer)
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            self._close(sink)

    def _close(self, writer: asyncio.StreamWriter) -> None:
        self._open.discard(writer)
        writer.close()
