"""Locust scenario: people signed in to the dashboard.

TG_RATE users (default 10), each signed in with a session (login form, CSRF)
and loading about once a second: the summary (24h, 7d), the page, and now and
then Django admin's event list. TG_DURATION seconds (default 300).

    .venv/bin/python -m loadtests.locust.run dashboard [--quick]
"""

from __future__ import annotations

from loadtests.locust.common import Stage, StagedShape, env_float
from loadtests.locust.users import DashboardUser

__all__ = ["DashboardShape", "DashboardUser"]

DURATION = env_float("TG_DURATION", 300)
USERS = max(1, round(env_float("TG_RATE", 10)))


class DashboardShape(StagedShape):
    def stages(self) -> list[Stage]:
        return [Stage("steady", DURATION, USERS, USERS)]
