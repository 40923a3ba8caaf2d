"""Throttling of failed sign-ins and failed API-key checks.

Counts failures per key (client address, or address + username) in a sliding
window, in this process's memory: a burst of guesses gets 429 for the rest of
the window, while successful callers are never slowed. With several worker
processes each counts its own failures (a shared limit would need Redis).
"""

from __future__ import annotations

import threading
import time
from collections import deque


class FailureThrottle:
    def __init__(self, limit: int, window_seconds: float, max_keys: int = 100_000) -> None:
        self.limit, self.window, self.max_keys = limit, window_seconds, max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # Django's sync views run on threads

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None when it is not blocked."""
        now = time.monotonic()
        with self._lock:
            failures = self._failures.get(key)
            if not failures:
                return None
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            if len(failures) < self.limit:
                return None
            return failures[0] + self.window - now

    def record_failure(self, key: str) -> None:
        with self._lock:
            if len(self._failures) >= self.max_keys:
                self._failures.clear()  # bounded memory under a spray of addresses
            self._failures.setdefault(key, deque()).append(time.monotonic())

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
