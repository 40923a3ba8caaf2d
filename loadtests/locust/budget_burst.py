"""Locust scenario: gateways at a sustained rate, then a burst, then back.

The gateway cycle (loadtests/locust/users.py, GatewayUser): reserve, then
record the event with the reservation_id, or release for ~2% of the calls;
spread over TG_TEAMS teams x TG_USERS_PER_TEAM users, half of the calls on
TG_HOT_TEAMS hot teams. Every hold touches the org's day window and its
team's day window.

Stages (TG_DURATION seconds in all, default 390):
    sustained  77% of the time at TG_RATE reservations/s (default 100)
    burst      15% at TG_BURST x TG_RATE (default 3x)
    recovery    8% at TG_RATE again: does the tail come back down?
Each reservation is followed by one more request (event or release), so the
HTTP rate is about twice the reservation rate.

One command sets everything up, runs it headless and writes the report:

    .venv/bin/python -m loadtests.locust.run budget_burst [--quick]

By hand (from the repository root, server on 127.0.0.1:8000, key of an org
set up like run_locust's):

    TOLLGATE_API_KEY=tg_... TG_DURATION=60 .venv/bin/locust -f loadtests/locust/budget_burst.py \\
        --headless --host http://127.0.0.1:8000 --csv loadtests/results/budget_burst
"""

from __future__ import annotations

from loadtests.locust.common import Stage, StagedShape, env_float, split_duration
from loadtests.locust.users import GATEWAY_CYCLES_PER_USER, GatewayUser

__all__ = ["BurstShape", "GatewayUser"]

DURATION = env_float("TG_DURATION", 390)
RATE = env_float("TG_RATE", 100)
BURST = env_float("TG_BURST", 3)


class BurstShape(StagedShape):
    def stages(self) -> list[Stage]:
        sustained, burst, recovery = split_duration(DURATION, [300 / 390, 60 / 390, 30 / 390])
        users = max(1, round(RATE / GATEWAY_CYCLES_PER_USER))
        burst_users = max(1, round(RATE * BURST / GATEWAY_CYCLES_PER_USER))
        # Spawn fast: a burst arrives within about a second.
        return [
            Stage("sustained", sustained, users, users),
            Stage("burst", burst, burst_users, burst_users),
            Stage("recovery", recovery, users, burst_users),
        ]
