"""What the locust scenarios share: the localhost guard, the subjects of the
load org, the gateway's request bodies, a staged load shape, and the
recorder of every response time per phase (loadtests/locust/phases.py) fed by
locust's request events.

Imported by the locustfiles (loadtests/locust/budget_burst.py, ingest_batches.py,
dashboard_views.py, mixed.py) and never by the wrapper (loadtests/locust/run.py),
which must not import locust: it monkey-patches the standard library.

Environment (set by the wrapper; defaults for a hand-run locust):
    TOLLGATE_API_KEY        API key of the load org (required)
    TG_DURATION             seconds of the whole shape
    TG_RATE                 target rate of the scenario's main traffic (see each file)
    TG_TEAMS, TG_USERS_PER_TEAM, TG_HOT_TEAMS, TG_HOT_SHARE   subjects, see below
    TG_VIEWER_USER, TG_VIEWER_PASSWORD   dashboard login (dashboard and mixed)
    TG_REPORT_JSON          where to write the per-phase results (optional)
"""

from __future__ import annotations

import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from locust import LoadTestShape, events

from loadtests.locust.phases import SERVER_TIME, Recorder, server_time

RESERVATIONS = "/v1/budget/reservations"
EVENTS = "/v1/events"

TEAMS = int(os.environ.get("TG_TEAMS", "100"))
USERS_PER_TEAM = int(os.environ.get("TG_USERS_PER_TEAM", "20"))
HOT_TEAMS = int(os.environ.get("TG_HOT_TEAMS", "3"))
# Share of the gateway traffic that goes to the hot teams (the rest is spread
# evenly over all teams): a few teams doing most of the spending.
HOT_SHARE = float(os.environ.get("TG_HOT_SHARE", "0.5"))
RELEASE_SHARE = float(os.environ.get("TG_RELEASE_SHARE", "0.02"))
HOLD_USD = "0.002"


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def api_headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {os.environ['TOLLGATE_API_KEY']}",
        "Content-Type": "application/json",
    }


@events.test_start.add_listener
def _only_localhost(environment: Any, **kwargs: Any) -> None:
    # A load test pointed at a shared or production host by mistake does harm.
    host = urlsplit(environment.host or "")
    if host.scheme != "http" or host.hostname != "127.0.0.1":
        raise SystemExit(f"--host must be http://127.0.0.1:<port>, not {environment.host!r}")
    if not os.environ.get("TOLLGATE_API_KEY"):
        raise SystemExit("Set TOLLGATE_API_KEY to an API key of the load org.")


# --- Subjects and bodies -------------------------------------------------------------


def team_slug(t: int) -> str:
    return f"t{t:03d}"


def user_id(t: int, u: int) -> str:
    return f"t{t:03d}-u{u:02d}"


def pick_subject() -> tuple[str, str]:
    """(team, user): HOT_SHARE of the calls go to teams 1..HOT_TEAMS, the rest
    anywhere among the TEAMS teams."""
    if HOT_TEAMS and random.random() < HOT_SHARE:
        t = random.randint(1, HOT_TEAMS)
    else:
        t = random.randint(1, TEAMS)
    return team_slug(t), user_id(t, random.randint(1, USERS_PER_TEAM))


def reserve_body(team: str, user: str) -> dict[str, Any]:
    return {"team": team, "user": user, "model": "gpt-4o", "estimated_cost_usd": HOLD_USD}


def event_body(team: str, user: str, reservation_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"lc-{uuid.uuid4().hex}",
        "team": team,
        "user": user,
        "model": "gpt-4o",
        "provider": "openai",
        "usage": {
            "prompt_tokens": random.randint(200, 2000),
            "completion_tokens": random.randint(50, 600),
            "prompt_tokens_details": {"cached_tokens": 100},
        },
        "latency_ms": random.randint(300, 3000),
        "status": "ok",
    }
    if reservation_id is not None:
        body["reservation_id"] = reservation_id
    return body


# --- Phases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    users: int
    spawn_rate: float


# The phase the shape is in now; users read it (e.g. dashboard users idle
# outside the "with dashboard" phase) and the recorder files responses under it.
current_phase = {"name": "start"}
# Dashboard users that have signed in (the mixed scenario's warm-up waits for them).
signed_in = {"count": 0}


class StagedShape(LoadTestShape):
    """Runs `stages()` one after another, then stops the test. A subclass may
    hold the first stage until `warmed_up()` (at most WARMUP_LIMIT seconds)."""

    abstract = True
    WARMUP_LIMIT = 120.0

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def warmed_up(self) -> bool:
        return True

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        stages = self.stages()
        if not getattr(self, "_warm", False):
            first = stages[0]
            if elapsed < first.seconds or (not self.warmed_up() and elapsed < self.WARMUP_LIMIT):
                current_phase["name"] = first.name
                return first.users, first.spawn_rate
            self._warm = True
            self._warm_offset = elapsed - first.seconds
        elapsed -= self._warm_offset
        for stage in stages:
            if elapsed < stage.seconds:
                current_phase["name"] = stage.name
                return stage.users, stage.spawn_rate
            elapsed -= stage.seconds
        return None


def split_duration(total: float, shares: list[float], minimum: float = 5.0) -> list[float]:
    """Seconds of each stage: `shares` of `total`, none shorter than `minimum`."""
    return [max(minimum, total * share) for share in shares]


recorder = Recorder()


def record_server_time(name: str, headers: Any) -> None:
    """Files the server's own time for a request (its `Server-Timing: app;dur=`)
    as "<name> (server)", beside locust's time for it: the difference is the
    network, the server's accept and parse, and locust's own delay."""
    ms = server_time(headers.get("server-timing"))
    if ms is not None:
        recorder.add(current_phase["name"], f"{name}{SERVER_TIME}", ms, None)


# --- Locust's own delay ------------------------------------------------------------------

LAG_PROBE_SECONDS = 0.002


def _probe_lag() -> None:
    """Locust's users share one gevent loop: while one of them works (builds a
    batch, reads a page) or locust waits for a core, a response that has
    arrived waits to be timed, so the time measured includes that wait. This
    greenlet asks to wake every 2 ms and records how late it woke, per phase:
    the delay a response can pick up on locust's side."""
    import gevent

    while True:
        asked = time.perf_counter()
        gevent.sleep(LAG_PROBE_SECONDS)
        late_ms = (time.perf_counter() - asked - LAG_PROBE_SECONDS) * 1000
        recorder.lag.setdefault(current_phase["name"], []).append(max(late_ms, 0.0))


@events.test_start.add_listener
def _start_lag_probe(environment: Any, **kwargs: Any) -> None:
    import gevent

    gevent.spawn(_probe_lag)


@events.request.add_listener
def _record(name: str, response_time: float, exception: Any, **kwargs: Any) -> None:
    recorder.add(current_phase["name"], name, response_time, exception)


@events.test_stop.add_listener
def _report(environment: Any, **kwargs: Any) -> None:
    recorder.print_summary()
    path = os.environ.get("TG_REPORT_JSON")
    if path:
        recorder.dump(path)
