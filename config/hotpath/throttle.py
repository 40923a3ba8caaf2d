"""Throttling of failed API-key checks, and the network a client counts as.

Counts failures per client network in a sliding window, in this process's
memory: a burst of bad keys gets 429 for the rest of the window, while callers
that never fail are never slowed. Memory is bounded by evicting the network
whose last failure is oldest, never by clearing everyone's count, so a spray
from many addresses cannot lift another address's block.

Key checks are counted per process on purpose: a key's secret is 32 random
bytes, so the throttle guards the database's time, not the secret, and N
processes letting N times the failures through costs nothing a shared counter
(one more write for every bad key) would not cost more. Failed sign-ins,
whose passwords can be guessed, are counted in the database by every process
alike (dashboard/signins.py).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque


def client_network(address: str) -> str:
    """What a client's failures count against: an IPv4 address itself, and
    for IPv6 its /64, since one host or one customer is given a whole /64 and
    counting single IPv6 addresses would give it 2**64 counters. A /24 is not
    used for IPv4: in a cloud, neighbours in one /24 are strangers, and one
    could lock the others out."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class FailureThrottle:
    def __init__(self, limit: int, window_seconds: float, max_keys: int = 100_000) -> None:
        self.limit, self.window, self.max_keys = limit, window_seconds, max_keys
        # By the time of each key's last failure (or blocked try), oldest first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
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
            # Still trying while blocked: the last to be evicted.
            self._failures.move_to_end(key)
            return failures[0] + self.window - now

    def record_failure(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            failures = self._failures.setdefault(key, deque())
            failures.append(now)
            while len(failures) > self.limit:
                failures.popleft()
            self._failures.move_to_end(key)
            self._evict()

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)

    def _evict(self) -> None:
        """While there are too many keys, drop the one that failed longest ago
        (keys are kept in the order of their last failure)."""
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
