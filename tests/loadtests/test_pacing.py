"""The locust users' pacing (loadtests/locust/pacing.py): each user keeps its own
grid of start times, so a stall of the server does not line them all up."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from loadtests.locust.pacing import begin_pacing, next_start, paced

PERIOD = 0.5


def test_an_overrun_shorter_than_a_period_runs_at_once_and_keeps_the_grid():
    # Planned at 10.0; the task ran until 10.7, past the run planned at 10.5.
    planned = next_start(10.0, now=10.7, period=PERIOD)
    assert planned == 10.5  # in the past: the next run starts at once
    assert next_start(planned, now=10.71, period=PERIOD) == 11.0  # back on the grid


def test_runs_missed_by_a_stall_are_skipped_not_piled_up():
    planned = next_start(10.0, now=12.3, period=PERIOD)
    assert planned == 12.0  # 10.5, 11.0 and 11.5 are skipped; the phase is kept
    assert 12.3 - PERIOD < planned <= 12.3


def test_users_stalled_together_keep_their_own_phases():
    # 50 users at different phases all wait on the same stall of 2.2 s.
    starts = [100.0 + i * PERIOD / 50 for i in range(50)]
    after = [next_start(s, now=102.25, period=PERIOD) for s in starts]
    phases = {round((a - 100.0) % PERIOD, 6) for a in after}
    assert len(phases) == 50  # constant_throughput would put all 50 on 102.25
    following = [next_start(a, now=102.26, period=PERIOD) for a in after]
    assert max(following) - min(following) > 0.9 * PERIOD


def test_a_paced_user_waits_for_its_next_grid_time():
    user = SimpleNamespace()
    begin_pacing(user, pace=200)  # sleeps at most 5 ms
    first = user._grid_next
    wait_time = paced(200)
    wait = wait_time(user)
    assert user._grid_next == first + 1 / 200
    assert 0 < wait <= 1 / 200


def test_begin_pacing_spreads_users_over_a_period():
    users = [SimpleNamespace() for _ in range(40)]
    for user in users:
        begin_pacing(user, pace=100)  # each sleeps up to 10 ms
    gaps = [b._grid_next - a._grid_next for a, b in itertools.pairwise(users)]
    # A random sleep each: some users start almost at once, others most of a
    # period apart (a fixed or missing sleep gives the same gap every time).
    assert min(gaps) < 0.004 < max(gaps)
