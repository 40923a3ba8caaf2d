"""Graceful stop for long-running management commands.

The first SIGTERM or SIGINT only asks the command to stop at its next safe
point (after the current pass or batch, whose transaction then commits); a
second one acts as usual and stops it at once, which is safe too, since every
batch is a transaction and every pass is idempotent.
"""

from __future__ import annotations

import signal
import time
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> StopRequest:
        try:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        except ValueError:
            # Not the main thread (e.g. a test calling the command from a
            # thread): signals go to the main thread's handlers anyway.
            self._previous = {}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: the handler runs between two bytecodes of whatever the
        # main thread does, so it must not take locks or touch the database.
        self.signal_name = signal.Signals(signum).name
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (within 0.2 s) when a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self.requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 0.2))
