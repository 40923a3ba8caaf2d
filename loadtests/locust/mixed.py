"""Locust scenario: everything at once, to show that the dashboard and admin
do not slow the hot path.

Gateways at TG_RATE reservations/s (default 100) and one log shipper (2
batches of 100 events/s) run all the time; TG_DASHBOARD_USERS signed-in
dashboard users (default 10: summary, page, admin event list) are active
only in the middle third. After a warm-up (everyone starts; at least 15 s
and until every dashboard user has signed in, at most 120 s), three phases of TG_DURATION/3 each (default 360 s
in all): "hot path alone", "with dashboard", "hot path alone again" (before
and after, so that a drift over the run - a growing table, a busier machine -
shows instead of being blamed on the dashboard). The report compares the
reservation p99 of the phases.

With TG_CYCLES=N (run_locust --cycles N) the phases alternate instead: N
pairs of "hot path alone #k" and "with dashboard #k" and a last "hot path
alone #N+1", 2N+1 phases of TG_DURATION/(2N+1). Each phase with dashboard
users then lies between two without, a minute or less apart, so that a
machine whose speed wanders (a shared host) compares like with like; the
report pools each arm's phases and gives each pair's ratio.

    .venv/bin/python -m loadtests.locust.run mixed [--quick] [--cycles N]
"""

from __future__ import annotations

from loadtests.locust import users as locust_users
from loadtests.locust.common import Stage, StagedShape, env_float, signed_in, split_duration
from loadtests.locust.phases import ALONE, WITH_DASHBOARD, alternating
from loadtests.locust.users import GATEWAY_CYCLES_PER_USER, GatewayUser, IngestUser

__all__ = ["Dashboard", "GatewayUser", "IngestUser", "MixedShape"]

DURATION = env_float("TG_DURATION", 360)
RATE = env_float("TG_RATE", 100)
DASHBOARD_USERS = max(1, round(env_float("TG_DASHBOARD_USERS", 10)))
CYCLES = max(1, round(env_float("TG_CYCLES", 1)))
GATEWAYS = max(1, round(RATE / GATEWAY_CYCLES_PER_USER))
WARMUP_SECONDS = 15

# Fixed head counts, whatever the total: the shape spawns all users at once and
# the dashboard users idle outside their phase.
GatewayUser.fixed_count = GATEWAYS
IngestUser.fixed_count = 1


# Not imported by name: locust would run every User class in this namespace.
class Dashboard(locust_users.DashboardUser):
    fixed_count = DASHBOARD_USERS
    only_in_phase = WITH_DASHBOARD


class MixedShape(StagedShape):
    def warmed_up(self) -> bool:
        return signed_in["count"] >= DASHBOARD_USERS

    def stages(self) -> list[Stage]:
        users = GATEWAYS + 1 + DASHBOARD_USERS
        # Everyone starts; the dashboard users sign in (password hashing is
        # CPU-heavy), so this stage is left out of the comparison.
        stages = [Stage("warm-up (sign-ins)", WARMUP_SECONDS, users, users)]
        if CYCLES == 1:
            third = split_duration(DURATION, [1 / 3])[0]
            return [
                *stages,
                Stage(ALONE, third, users, users),
                Stage(WITH_DASHBOARD, third, users, users),
                Stage(f"{ALONE} again", third, users, users),
            ]
        names = alternating(CYCLES)
        seconds = split_duration(DURATION, [1 / len(names)])[0]
        return stages + [Stage(name, seconds, users, users) for name in names]
