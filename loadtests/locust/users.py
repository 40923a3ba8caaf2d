"""The simulated clients of the locust scenarios. A locustfile imports the
ones it runs (locust runs every User class in the locustfile's namespace).

- GatewayUser: an AI gateway's cycle per model call: reserve, then record the
  event with its reservation_id (settles the hold), or release the hold for
  ~2% of the calls (the model call failed). Paced at GATEWAY_CYCLES_PER_USER
  cycles per second, so users x pace = reservations per second.
- IngestUser: a log shipper posting batches of INGEST_BATCH new events.
- DashboardUser: a person signed in to the dashboard (session cookie, not an
  API key) loading the page and polling the summary, and now and then the
  admin's event list. With `only_in_phase` set it idles outside that phase,
  or those phases when the shape repeats it ("with dashboard #1", "#2", ...:
  the mixed scenario measures the hot path without, then with it).
"""

from __future__ import annotations

import os
import random
import re

from locust import FastHttpUser, HttpUser, task

from loadtests.locust.common import (
    EVENTS,
    RELEASE_SHARE,
    RESERVATIONS,
    api_headers,
    current_phase,
    event_body,
    pick_subject,
    record_server_time,
    reserve_body,
    signed_in,
    team_slug,
    user_id,
)
from loadtests.locust.pacing import begin_pacing, paced
from loadtests.locust.phases import arm_of

GATEWAY_CYCLES_PER_USER = 2.0
INGEST_BATCHES_PER_USER = 2.0
INGEST_BATCH = 100
DASHBOARD_LOADS_PER_USER = 1.0
# TG_DASHBOARD_ADMIN=0 leaves Django admin's event list out of the dashboard load.
DASHBOARD_ADMIN = os.environ.get("TG_DASHBOARD_ADMIN", "1") != "0"
# Where the dashboard users' requests go when not to the hot path's server: all
# of them (run_locust --web-server), or admin's pages only (--admin-server).
# The session cookie is the host's, whatever the port.
WEB_URL = os.environ.get("TG_WEB_URL", "")
ADMIN_URL = os.environ.get("TG_ADMIN_URL", "") or WEB_URL


class GatewayUser(FastHttpUser):
    wait_time = paced(GATEWAY_CYCLES_PER_USER)

    def on_start(self) -> None:
        self.headers = api_headers()
        begin_pacing(self, GATEWAY_CYCLES_PER_USER)

    @task
    def cycle(self) -> None:
        team, user = pick_subject()
        with self.client.post(
            RESERVATIONS,
            json=reserve_body(team, user),
            headers=self.headers,
            name="reserve",
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"reserve {response.status_code}: {response.text[:160]}")
                return
            record_server_time("reserve", response.headers)
            reservation_id = response.json()["reservation_id"]
            if reservation_id is None:  # fail-open answer: nothing was held
                response.failure("reserve: degraded (store unavailable, fail-open)")
                return
        if random.random() < RELEASE_SHARE:
            self._release(reservation_id)
        else:
            self._record(team, user, reservation_id)

    def _record(self, team: str, user: str, reservation_id: str) -> None:
        with self.client.post(
            EVENTS,
            json=event_body(team, user, reservation_id),
            headers=self.headers,
            name="event (settles hold)",
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"event {response.status_code}: {response.text[:160]}")

    def _release(self, reservation_id: str) -> None:
        with self.client.post(
            f"{RESERVATIONS}/{reservation_id}/release",
            headers=self.headers,
            name="release",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"release {response.status_code}: {response.text[:160]}")


class IngestUser(FastHttpUser):
    wait_time = paced(INGEST_BATCHES_PER_USER)

    def on_start(self) -> None:
        self.headers = api_headers()
        self.counter = 0
        begin_pacing(self, INGEST_BATCHES_PER_USER)

    @task
    def batch(self) -> None:
        events = []
        for i in range(INGEST_BATCH):
            t = i % 50 + 1
            events.append(event_body(team_slug(t), user_id(t, i % 20 + 1)))
        with self.client.post(
            EVENTS,
            json={"events": events},
            headers=self.headers,
            name=f"events batch of {INGEST_BATCH}",
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"batch {response.status_code}: {response.text[:160]}")


_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class DashboardUser(HttpUser):
    """requests-based (HttpUser): it keeps the session and CSRF cookies."""

    wait_time = paced(DASHBOARD_LOADS_PER_USER)
    only_in_phase: str | None = None

    def on_start(self) -> None:
        page = self.client.get(f"{WEB_URL}/accounts/login/", name="login page")
        token = _CSRF_INPUT.search(page.text)
        with self.client.post(
            f"{WEB_URL}/accounts/login/?next=/",
            data={
                "username": os.environ["TG_VIEWER_USER"],
                "password": os.environ["TG_VIEWER_PASSWORD"],
                "csrfmiddlewaretoken": token.group(1) if token else "",
            },
            name="login",
            allow_redirects=False,
            catch_response=True,
        ) as response:
            if response.status_code != 302:
                response.failure(f"login {response.status_code}: {response.text[:160]}")
                return
        signed_in["count"] += 1
        begin_pacing(self, DASHBOARD_LOADS_PER_USER)

    def _idle(self) -> bool:
        return (
            self.only_in_phase is not None and arm_of(current_phase["name"]) != self.only_in_phase
        )

    @task(4)
    def summary(self) -> None:
        if self._idle():
            return
        self.client.get(f"{WEB_URL}/v1/dashboard/summary?range=24h", name="summary 24h")

    @task(2)
    def summary_week(self) -> None:
        if self._idle():
            return
        self.client.get(f"{WEB_URL}/v1/dashboard/summary?range=7d", name="summary 7d")

    @task(2)
    def page(self) -> None:
        if self._idle():
            return
        self.client.get(f"{WEB_URL}/", name="dashboard page")

    @task(1)
    def admin_events(self) -> None:
        if self._idle() or not DASHBOARD_ADMIN:
            return
        self.client.get(f"{ADMIN_URL}/admin/tracking/requestevent/", name="admin event list")
