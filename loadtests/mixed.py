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

    .venv/bin/python -m loadtests.run_locust mixed [--quick]
"""

from __future__ import annotations

from loadtests import locust_users
from loadtests.locust_common import Stage, StagedShape, env_float, signed_in, split_duration
from loadtests.locust_users import GATEWAY_CYCLES_PER_USER, GatewayUser, IngestUser

__all__ = ["Dashboard", "GatewayUser", "IngestUser", "MixedShape"]

DURATION = env_float("TG_DURATION", 360)
RATE = env_float("TG_RATE", 100)
DASHBOARD_USERS = max(1, round(env_float("TG_DASHBOARD_USERS", 10)))
GATEWAYS = max(1, round(RATE / GATEWAY_CYCLES_PER_USER))
WITH_DASHBOARD = "with dashboard"
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
        third = split_duration(DURATION, [1 / 3])[0]
        users = GATEWAYS + 1 + DASHBOARD_USERS
        return [
            # Everyone starts; the dashboard users sign in (password hashing
            # is CPU-heavy), so this stage is left out of the comparison.
            Stage("warm-up (sign-ins)", WARMUP_SECONDS, users, users),
            Stage("hot path alone", third, users, users),
            Stage(WITH_DASHBOARD, third, users, users),
            Stage("hot path alone again", third, users, users),
        ]
