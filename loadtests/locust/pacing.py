"""Pacing of the locust users: each runs its task on its own grid of start
times, one period (1 / pace seconds) apart, starting at a random point of the
first period.

Locust's `constant_throughput` restarts a user's grid whenever a task overruns
the period: a stall of the server (a dashboard user's sign-in took ~2 s)
puts every user on the same grid, and they stay there.
Measured at 19:45 on 2026-11-22 in the mixed scenario: 50 holds arriving
within the same ~50 ms of every 500 ms, instead of the spread-out arrivals of
a fleet of gateways. It measured the batching of a 50-request burst every
half second (reservation p50 ~30 ms) rather than a steady 100 requests/s
(p50 ~6 ms).

No locust import here (it monkey-patches the standard library on import), so
the tests can import this module; under locust, time.sleep is gevent's.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any


def begin_pacing(user: Any, pace: float) -> None:
    """From `on_start`: wait a random part of one period, then start the grid
    (locust has made time.sleep a gevent sleep)."""
    time.sleep(random.uniform(0, 1 / pace))
    user._grid_next = time.monotonic()


def next_start(planned: float, now: float, period: float) -> float:
    """The grid time after `planned`: runs that are already a whole period
    late are skipped (a slow server lowers the achieved rate instead of
    piling up requests); one that is less late runs at once."""
    planned += period
    if planned < now - period:
        planned += (now - planned) // period * period
    return planned


def paced(pace: float) -> Callable[[Any], float]:
    """A locust `wait_time`: the task starts `pace` times a second on the user's grid."""
    period = 1 / pace

    def wait_time(user: Any) -> float:
        now = time.monotonic()
        user._grid_next = next_start(getattr(user, "_grid_next", now), now, period)
        return max(0.0, user._grid_next - now)

    return wait_time
