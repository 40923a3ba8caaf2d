"""Locust load test of the reservation path: reserve, then release about 2% of
the holds (the calls that failed upstream), spread over a set of teams/users.

Setup (once): the bench org of loadtests/harness/seed.py, with its teams, users and a day
budget that never denies, and an API key for it (printed on the last line):

    .venv/bin/python -m loadtests.compare --seed-only

Then, with the server running (`.venv/bin/uvicorn config.asgi:application
--port 8000`), one headless, time-bounded run that writes CSV files:

    TOLLGATE_API_KEY=tg_... .venv/bin/locust -f loadtests/locust/reservations.py \\
        --headless -u 50 -r 10 --run-time 60s --host http://127.0.0.1:8000 \\
        --csv loadtests/results/reservations

Environment: TOLLGATE_API_KEY (required), BENCH_TEAMS (default 20),
BENCH_USERS_PER_TEAM (default 10), BENCH_RELEASE_SHARE (default 0.02).
Only http://127.0.0.1 is accepted as host. Locust itself is Python and takes
CPU from the server on a small machine; loadtests/compare.py uses wrk instead.
"""

from __future__ import annotations

import os
import random
from typing import Any
from urllib.parse import urlsplit

from locust import FastHttpUser, between, events, task

RESERVATIONS = "/v1/budget/reservations"
TEAMS = int(os.environ.get("BENCH_TEAMS", "20"))
USERS_PER_TEAM = int(os.environ.get("BENCH_USERS_PER_TEAM", "10"))
RELEASE_SHARE = float(os.environ.get("BENCH_RELEASE_SHARE", "0.02"))


@events.test_start.add_listener
def _only_localhost(environment: Any, **kwargs: Any) -> None:
    # A load test pointed at a shared or production host by mistake does harm.
    host = urlsplit(environment.host or "")
    if host.scheme != "http" or host.hostname != "127.0.0.1":
        raise SystemExit(f"--host must be http://127.0.0.1:<port>, not {environment.host!r}")
    if not os.environ.get("TOLLGATE_API_KEY"):
        raise SystemExit("Set TOLLGATE_API_KEY to an API key of the org under test.")


class GatewayUser(FastHttpUser):
    """A gateway that asks for a hold before each model call."""

    host = "http://127.0.0.1:8000"
    # Closed loop with a short think time, like a busy gateway.
    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        self.headers = {
            "Authorization": f"Bearer {os.environ['TOLLGATE_API_KEY']}",
            "Content-Type": "application/json",
        }

    @task
    def reserve(self) -> None:
        t = random.randint(1, TEAMS)
        u = random.randint(1, USERS_PER_TEAM)
        body = {
            "team": f"team-{t:02d}",
            "user": f"user-{t:02d}-{u:02d}",
            "estimated_cost_usd": "0.001",
        }
        with self.client.post(
            RESERVATIONS, json=body, headers=self.headers, catch_response=True
        ) as response:
            if response.status_code != 201:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            reservation_id = response.json()["reservation_id"]
        if random.random() < RELEASE_SHARE:
            self._release(reservation_id)

    def _release(self, reservation_id: str) -> None:
        with self.client.post(
            f"{RESERVATIONS}/{reservation_id}/release",
            headers=self.headers,
            name=f"{RESERVATIONS}/[id]/release",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
