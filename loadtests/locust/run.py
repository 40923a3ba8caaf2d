"""Run one locust scenario headless against a fresh local Tollgate, and report.

    .venv/bin/python -m loadtests.locust.run SCENARIO [--quick | --duration S] [--rate R]

SCENARIO is one of: budget_burst, ingest, dashboard, mixed (see the
locustfiles named in SCENARIOS below for what each does and its default
rate and length). The script

1. starts (or joins) the embedded PostgreSQL and sets up the load org
   `loadtest` once: 100 teams x 20 users, an org day budget and a day budget per
   team (never reached, so every hold takes the full path), 20,000 events of
   the last 7 days (aggregated) for the dashboard to show, a staff login with
   a fresh random password and a fresh API key per run;
2. starts one Tollgate server process (uvicorn, uvloop + httptools, as in
   production) on 127.0.0.1:PORT, and `manage.py run_worker` beside it with
   its defaults (expiry and alerts every 5 s, aggregation every 30 s), as a
   deployment runs them: the dashboard reads rollups plus the raw events the
   worker has not aggregated yet;
3. runs locust headless with the scenario's load shape, bounded in time
   (the shape stops the test; the process is killed 60 s after it should have
   ended);
4. writes locust's CSV files to loadtests/results/locust/NAME_*.csv (run
   output, not committed) and a markdown report with exact per-phase
   percentiles, error rate, achieved rates and the CPU used by the server, the worker, PostgreSQL, locust and everything else
   (a run is flagged ⚠ when other processes used more than 10% of a core) to
   docs/benchmarks/locust-NAME.md, where NAME is the scenario, followed by
   `-admin-server` or `-web-server` and/or `-no-admin` for those variants (a variant's run does
   not overwrite the plain scenario's report);
5. stops the server and the worker (also on Ctrl-C, SIGTERM or an error).

Exit status 1 when more than --max-error-pct of the requests failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import itertools
import json
import os
import re
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from loadtests.harness.cpu import NOISY_OTHER_CPU_PCT, CpuSample, CpuShares, cpu_shares, sample_cpu
from loadtests.harness.paths import BASE_DIR, RESULTS_DIR
from loadtests.harness.seed import django_setup
from loadtests.harness.servers import HOST, Design, DesignFailed, serve, stop, tollgate_design
from loadtests.locust.phases import ALONE, CYCLE_MARK, SERVER_TIME, WITH_DASHBOARD, arm_of
from loadtests.reports.markdown import machine

REPORT_DIR = BASE_DIR / "docs" / "benchmarks"
# Locust's raw CSV files are run output, git-ignored like the rest of RESULTS_DIR.
CSV_DIR = RESULTS_DIR / "locust"

ORG_SLUG = "loadtest"
TEAMS = 100
USERS_PER_TEAM = 20
HOT_TEAMS = 3
LIMIT = Decimal("1000000000")
DASHBOARD_EVENTS = 20_000
VIEWER = "loadtest-viewer"
KEY_NAME = "loadtests.locust.run"
QUICK_SECONDS = 60
# Stages a scenario runs beyond TG_DURATION (mixed's warm-up, at most).
EXTRA_SECONDS = 120
# Above this share of a core, locust (one Python process) is the bottleneck.
GENERATOR_BOUND_PCT = 90.0


@dataclass(frozen=True)
class Scenario:
    locustfile: str
    seconds: int  # default length of the whole shape
    rate: float  # default TG_RATE
    rate_unit: str


SCENARIOS = {
    "budget_burst": Scenario(
        "loadtests/locust/budget_burst.py",
        390,
        100,
        "reservations/s (burst: 3x)",
    ),
    "ingest": Scenario("loadtests/locust/ingest_batches.py", 300, 10, "batches of 100 events/s"),
    "dashboard": Scenario(
        "loadtests/locust/dashboard_views.py",
        300,
        10,
        "signed-in users, ~1 load/s each",
    ),
    "mixed": Scenario(
        "loadtests/locust/mixed.py",
        360,
        100,
        "reservations/s + 2 batches/s + 10 dashboard users in the middle third",
    ),
}


# --- Setup ------------------------------------------------------------------------------


def setup_org() -> tuple[str, str]:
    """The load org (created once, topped up to its events), a fresh API key
    and a fresh password for the staff login. Returns (key, password)."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from budgets.models import ApiKey, Budget, EndUser, Organization, Team
    from budgets.services import api_key_create, organization_create
    from dashboard.models import Membership
    from tracking.management.commands.seed_demo import Command as SeedDemo
    from tracking.models import Price, RequestEvent

    if not Price.objects.filter(model="gpt-4o").exists():
        call_command("load_prices", verbosity=0)
    org = Organization.objects.filter(slug=ORG_SLUG).first() or organization_create(
        slug=ORG_SLUG, name="Load test"
    )
    Team.objects.bulk_create(
        [Team(org=org, slug=f"t{t:03d}") for t in range(1, TEAMS + 1)], ignore_conflicts=True
    )
    EndUser.objects.bulk_create(
        [
            EndUser(org=org, external_id=f"t{t:03d}-u{u:02d}")
            for t in range(1, TEAMS + 1)
            for u in range(1, USERS_PER_TEAM + 1)
        ],
        ignore_conflicts=True,
    )
    Budget.objects.get_or_create(
        org=org, scope="org", period="day", defaults={"limit_usd": LIMIT, "enforce": True}
    )
    for team in Team.objects.filter(org=org, slug__startswith="t"):
        Budget.objects.get_or_create(
            org=org, scope="team", team=team, period="day", defaults={"limit_usd": LIMIT}
        )
    have = RequestEvent.objects.filter(org=org).count()
    if have < DASHBOARD_EVENTS:
        print(f"Seeding {DASHBOARD_EVENTS - have:,} events of the last 7 days…", flush=True)
        SeedDemo().seed_events(org, hours=7 * 24, count=DASHBOARD_EVENTS - have, seed=7)
    call_command("aggregate_usage", verbosity=0)

    password = secrets.token_urlsafe(16)
    viewer, _ = User.objects.get_or_create(username=VIEWER)
    viewer.is_staff = viewer.is_superuser = True
    viewer.set_password(password)
    viewer.save()
    Membership.objects.update_or_create(user=viewer, defaults={"org": org})

    ApiKey.objects.filter(org=org, name=KEY_NAME).delete()
    _key, secret = api_key_create(org=org, name=KEY_NAME)
    return secret, password


# --- Run ----------------------------------------------------------------------------------


def server_design(workers: int, port: int, pool_max: int | None) -> Design:
    return tollgate_design(port, workers=workers, pool_max=pool_max)


@contextlib.contextmanager
def run_worker(
    log_path: Path, aggregate_every: float | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`manage.py run_worker` for the duration of the block: its defaults, or
    aggregation passes every `aggregate_every` seconds."""
    every = [] if aggregate_every is None else ["--aggregate-every", f"{aggregate_every:g}"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker", *every],
            cwd=BASE_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: its CPU is counted apart
        )
        try:
            yield process
        finally:
            stop(process)


@contextlib.contextmanager
def second_server(args: argparse.Namespace, log_path: Path) -> Iterator[subprocess.Popen | None]:
    """With --admin-server or --web-server, a second server (one process, same
    app) on the next port, which the dashboard users' admin pages, or all of
    their requests, go to: that work then runs beside the hot path, not in its
    process."""
    if second_server_role(args) is None:
        yield None
        return
    design = server_design(1, second_port(args), args.pool_max)
    if args.second_nice:
        # A lower CPU weight, as `nice` (or a container's CPU weight) gives it.
        design = dataclasses.replace(
            design, argv=["nice", "-n", str(args.second_nice), *design.argv]
        )
    if args.second_idle:
        # SCHED_IDLE: it runs when no other process wants the core, and a
        # waking hot-path process takes the core from it at once (systemd:
        # CPUSchedulingPolicy=idle).
        design = dataclasses.replace(design, argv=["chrt", "--idle", "0", *design.argv])
    with serve(design, second_port(args), log_path) as process:
        yield process


def settings_from_environment() -> list[str]:
    """NAME=value of every Tollgate setting that the environment sets (the
    servers and the worker inherit them), secrets and addresses left out."""
    return sorted(
        f"{name}={value}"
        for name, value in os.environ.items()
        if is_setting(name) and not any(word in name for word in ("SECRET", "PASSWORD", "URL"))
    )


def is_setting(name: str) -> bool:
    from django.conf import settings

    return name.isupper() and hasattr(settings, name)


def second_server_role(args: argparse.Namespace) -> str | None:
    """ "admin" or "web": what the second server serves, if there is one."""
    return "admin" if args.admin_server else "web" if args.web_server else None


def second_port(args: argparse.Namespace) -> int:
    return args.port + 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    scenario = SCENARIOS[args.scenario]
    key, password = setup_org()
    design = server_design(args.workers, args.port, args.pool_max)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    CSV_DIR.mkdir(parents=True, exist_ok=True)
    phases_json = RESULTS_DIR / f"locust-{args.scenario}.phases.json"
    phases_json.unlink(missing_ok=True)
    locust_log = RESULTS_DIR / f"locust-{args.scenario}.log"
    env = {
        **os.environ,
        "TOLLGATE_API_KEY": key,
        "TG_DURATION": str(args.duration),
        "TG_RATE": str(args.rate),
        "TG_CYCLES": str(args.cycles),
        "TG_TEAMS": str(TEAMS),
        "TG_USERS_PER_TEAM": str(USERS_PER_TEAM),
        "TG_HOT_TEAMS": str(HOT_TEAMS),
        "TG_VIEWER_USER": VIEWER,
        "TG_VIEWER_PASSWORD": password,
        "TG_REPORT_JSON": str(phases_json),
        "TG_DASHBOARD_ADMIN": "0" if args.no_admin else "1",
        "TG_ADMIN_URL": f"http://{HOST}:{second_port(args)}" if args.admin_server else "",
        "TG_WEB_URL": f"http://{HOST}:{second_port(args)}" if args.web_server else "",
    }
    argv = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        scenario.locustfile,
        "--headless",
        "--host",
        f"http://{HOST}:{args.port}",
        "--csv",
        str(CSV_DIR / run_name(args)),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    server_log = RESULTS_DIR / f"locust-{args.scenario}.server.log"
    worker_log = RESULTS_DIR / f"locust-{args.scenario}.worker.log"
    second_log = RESULTS_DIR / f"locust-{args.scenario}.second-server.log"
    with (
        serve(design, args.port, server_log) as server,
        run_worker(worker_log, args.aggregate_every) as worker,
        second_server(args, second_log) as second,
    ):
        print(f"Server up on {HOST}:{args.port}; locust for {args.duration} s…", flush=True)
        before = sample_cpu()
        with locust_log.open("w") as log, CpuSampler() as sampler:
            locust = subprocess.Popen(
                argv,
                cwd=BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: its CPU is counted apart
            )
            try:
                returncode = locust.wait(timeout=args.duration + EXTRA_SECONDS + 60)
            except subprocess.TimeoutExpired:
                returncode = -1
            finally:
                stop(locust)
        after = sample_cpu()
        groups = (server.pid, worker.pid, None if second is None else second.pid)
        cpu = cpu_shares(before, after, *groups)
        elapsed = after.at - before.at
        locust_cpu = 100 * (after.reaped_children - before.reaped_children) / elapsed
    if not phases_json.exists():
        raise SystemExit(f"locust wrote no results (exit {returncode}); see {locust_log}")
    results = json.loads(phases_json.read_text())
    results.update(
        cpu=cpu,
        phase_cpu=sampler.shares_by_phase(results.get("phases", {}), groups, locust.pid),
        locust_cpu=locust_cpu,
        locust_exit=returncode,
        elapsed=elapsed,
        server_log=server_log,
    )
    return results


class CpuSampler:
    """Samples the machine's CPU accounts every second while locust runs, so
    that the report can say where the CPU went in each phase (the run's total
    mixes the phases with and without dashboard load)."""

    INTERVAL = 1.0

    def __init__(self) -> None:
        self.samples: list[CpuSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append(sample_cpu())
            if self._stop.wait(self.INTERVAL):
                return

    def shares_by_phase(
        self, phases: dict[str, list[float]], groups: tuple[int, int, int | None], locust: int
    ) -> dict[str, CpuShares]:
        """CPU shares between the first and last sample inside each phase's
        span (time.monotonic(), the same clock in locust's process)."""
        shares = {}
        for name, (first, last) in phases.items():
            inside = [s for s in self.samples if first <= s.at <= last]
            if len(inside) >= 2:
                shares[name] = cpu_shares(inside[0], inside[-1], *groups, locust)
        return shares


# --- Report -------------------------------------------------------------------------------


def report(args: argparse.Namespace, results: dict[str, Any], started: datetime) -> str:
    # Not `import locust`: that monkey-patches threading (gevent) in this process.
    locust_version = importlib.metadata.version("locust")
    scenario = SCENARIOS[args.scenario]
    rows = results["rows"]
    cpu = results["cpu"]
    total, failures = request_totals(rows)
    error_pct = 100 * failures / total if total else 100.0
    noisy = cpu.other > NOISY_OTHER_CPU_PCT
    generator_bound = results["locust_cpu"] > GENERATOR_BOUND_PCT
    command = report_command(args, scenario)
    lines = [
        f"# Locust scenario `{args.scenario}`{' ⚠ provisional' if noisy or args.quick else ''}",
        "",
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC "
        f"({results['elapsed']:.0f} s of load). Locustfile: `{scenario.locustfile}`; "
        f"rate: {args.rate:g} {scenario.rate_unit}; one Tollgate worker "
        f"({args.workers} uvicorn process(es), uvloop + httptools, "
        f"{'default hot-path pool' if args.pool_max is None else f'HOTPATH_POOL_MAX={args.pool_max}'}); "
        f"raw CSV (on the machine that ran it, not committed): "
        f"`{CSV_DIR.relative_to(BASE_DIR)}/{run_name(args)}_stats.csv` (and `_failures`, "
        "`_exceptions`, `_stats_history`).",
    ]
    overrides = settings_from_environment()
    if overrides:
        lines += [
            "",
            "Settings from the environment: " + ", ".join(f"`{o}`" for o in overrides) + ".",
        ]
    lines += [
        "",
        "| phase | request | requests | rate /s | errors | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['phase']} | {r['name']} | {r['requests']:,} | {r['rps']:.1f} "
            f"| {r['failures']} ({100 * r['failures'] / r['requests']:.2f}%) "
            f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} |"
        )
    lines += ["", f"- Error rate over the run: **{error_pct:.2f}%** ({failures:,} of {total:,})."]
    for message, count in sorted(results["errors"].items(), key=lambda item: -item[1])[:5]:
        lines.append(f"  - x{count}: `{message}`")
    lines += hot_path_lines(args.scenario, rows)
    lines += cycle_lines(results.get("arms", []), rows)
    lines += [
        f"- CPU (share of one core): server {cpu.server:.0f}%, "
        + ("" if cpu.second is None else f"{second_server_role(args)} server {cpu.second:.0f}%, ")
        + f"worker {cpu.worker:.0f}%, "
        "PostgreSQL "
        f"{'n/a' if cpu.postgres is None else f'{cpu.postgres:.0f}%'}, locust "
        f"{results['locust_cpu']:.0f}%, other processes {cpu.other:.0f}%.",
    ]
    lines += phase_cpu_lines(args, results["phase_cpu"])
    arm_lag = [{**r, "phase": f"{r['phase']} (all)"} for r in results.get("arm_lag", [])]
    lines += lag_lines(results.get("lag", []) + arm_lag)
    if generator_bound:
        lines.append(
            f"- ⚠ locust used {results['locust_cpu']:.0f}% of a core: the load generator, "
            "not the server, may cap the achieved rate and inflate latencies."
        )
    if noisy:
        lines.append(
            f"- ⚠ other processes used {cpu.other:.0f}% of a core during the run: the machine "
            "was not quiet; the numbers are provisional."
        )
    if args.quick:
        lines.append("- ⚠ `--quick` smoke run: phases are seconds long, percentiles are rough.")
    lines += [
        "- Percentiles are exact (nearest rank over every response of the phase, recorded by "
        "`loadtests/locust/phases.py`); a phase's rate is its responses over its span. Locust "
        "measures from its side, so its own scheduling delay is included.",
        "",
        "## Machine",
        "",
        *machine(),
        f"- locust {locust_version} (one process; FastHttpUser for API clients, "
        "HttpUser for signed-in dashboard users)",
        "",
    ]
    return "\n".join(lines)


def request_totals(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """(requests, failures) of the run: the rows of the server's own times
    (loadtests/locust/phases.py, SERVER_TIME) are the same requests seen from the server."""
    answered = [r for r in rows if not r["name"].endswith(SERVER_TIME)]
    return sum(r["requests"] for r in answered), sum(r["failures"] for r in answered)


def phase_cpu_lines(args: argparse.Namespace, shares: dict[str, CpuShares]) -> list[str]:
    """A table of where the CPU went in each phase (sampled every second)."""
    if not shares:
        return []
    role = second_server_role(args)

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}%"

    lines = [
        "",
        f"CPU by phase (share of one core; the machine has {os.cpu_count()} cores, "
        f"{100 * (os.cpu_count() or 1)}% in all; sampled every {CpuSampler.INTERVAL:g} s):",
        "",
        "| phase | server |"
        + (f" {role} server |" if role else "")
        + " worker | PostgreSQL | locust | other processes | machine |",
        "|---|---:|" + ("---:|" if role else "") + "---:|---:|---:|---:|---:|",
    ]
    for phase, cpu in {**shares, **arm_cpu(shares)}.items():
        lines.append(
            f"| {phase} | {pct(cpu.server)} |"
            + (f" {pct(cpu.second)} |" if role else "")
            + f" {pct(cpu.worker)} | {pct(cpu.postgres)} | {pct(cpu.generator)} "
            f"| {pct(cpu.other)} | {pct(cpu.machine)} |"
        )
    return [*lines, ""]


def arm_cpu(shares: dict[str, CpuShares]) -> dict[str, CpuShares]:
    """For mixed --cycles: each arm's phases averaged (they are equally long)."""
    phases: dict[str, list[CpuShares]] = {}
    for phase, cpu in shares.items():
        if CYCLE_MARK in phase:
            phases.setdefault(f"{arm_of(phase)} (all)", []).append(cpu)

    def mean(values: list[float | None]) -> float | None:
        return None if None in values else statistics.mean(values)

    return {
        arm: CpuShares(
            **{
                field.name: mean([getattr(cpu, field.name) for cpu in each])
                for field in dataclasses.fields(CpuShares)
            }
        )
        for arm, each in phases.items()
    }


def lag_lines(lag: list[dict[str, Any]]) -> list[str]:
    """How late locust's lag probe woke in each phase: how long a response
    can wait on locust's side before it is timed (loadtests/locust/common.py)."""
    if not lag:
        return []
    lines = [
        "",
        "Locust's own delay by phase (a greenlet asks to wake every 2 ms; how late it woke): "
        "a response that arrives while locust's other users run, or while locust waits for "
        "a core, waits about that long to be timed.",
        "",
        "| phase | samples | p50 ms | p99 ms | p99.9 ms | max ms | late > 1 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in lag:
        lines.append(
            f"| {r['phase']} | {r['samples']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['p999_ms']:.2f} | {r['max_ms']:.1f} | {100 * r['over_1ms']:.1f}% |"
        )
    return [*lines, ""]


def hot_path_lines(scenario: str, rows: list[dict[str, Any]]) -> list[str]:
    """For mixed: the reservation p99 without and with dashboard load."""
    if scenario != "mixed":
        return []
    by_phase = {r["phase"]: r for r in rows if r["name"] == "reserve"}
    if any(CYCLE_MARK in phase for phase in by_phase):
        return []  # cycle_lines says it
    alone = [by_phase[p] for p in (ALONE, f"{ALONE} again") if p in by_phase]
    loaded = by_phase.get(WITH_DASHBOARD)
    if not alone or loaded is None:
        return ["- ⚠ a phase is missing: no comparison."]
    base = max(r["p99_ms"] for r in alone)
    without = " / ".join(f"{r['p99_ms']:.1f}" for r in alone)
    return [
        f"- **Reservation p99 without dashboard load: {without} ms "
        f"(before / after); with it: {loaded['p99_ms']:.1f} ms** "
        f"({loaded['p99_ms'] / base:.2f}x the worse of the two)."
    ]


def cycle_lines(arms: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """For mixed --cycles: the reservation percentiles of each arm's phases
    pooled, and each "with dashboard #k" against the phases either side of it."""
    pooled = {r["phase"]: r for r in arms if r["name"] == "reserve"}
    alone, loaded = pooled.get(ALONE), pooled.get(WITH_DASHBOARD)
    if alone is None or loaded is None:
        return []
    lines = [
        f"- **Reservation p99 without dashboard load: {alone['p99_ms']:.1f} ms; with it: "
        f"{loaded['p99_ms']:.1f} ms ({loaded['p99_ms'] / alone['p99_ms']:.2f}x)**, each arm's "
        f"phases pooled ({alone['requests']:,} and {loaded['requests']:,} reservations); "
        f"p50 {alone['p50_ms']:.1f} → {loaded['p50_ms']:.1f} ms, "
        f"p95 {alone['p95_ms']:.1f} → {loaded['p95_ms']:.1f} ms.",
    ]
    server = {r["phase"]: r for r in arms if r["name"] == f"reserve{SERVER_TIME}"}
    if ALONE in server and WITH_DASHBOARD in server:
        alone, loaded = server[ALONE], server[WITH_DASHBOARD]
        lines.append(
            f"- The server's own time for a reservation (its `Server-Timing`, from dispatch "
            f"to answer): p99 {alone['p99_ms']:.1f} → {loaded['p99_ms']:.1f} ms "
            f"({loaded['p99_ms'] / alone['p99_ms']:.2f}x), p50 {alone['p50_ms']:.1f} → "
            f"{loaded['p50_ms']:.1f} ms; the rest of locust's time is the network, the "
            "server's accept and parse, and locust's own delay."
        )
    p99 = {r["phase"]: r["p99_ms"] for r in rows if r["name"] == "reserve"}
    ratios = []
    for k in itertools.count(1):
        with_k = p99.get(f"{WITH_DASHBOARD}{CYCLE_MARK}{k}")
        either_side = [p99.get(f"{ALONE}{CYCLE_MARK}{j}") for j in (k, k + 1)]
        if with_k is None or None in either_side:
            break
        ratios.append(with_k / statistics.mean(either_side))
    if ratios:
        lines.append(
            "- Each phase with the dashboard users against the mean of the two without "
            f"either side of it (reservation p99): median **{statistics.median(ratios):.2f}x**, "
            + ", ".join(f"{ratio:.2f}x" for ratio in ratios)
            + "."
        )
    return lines


# --- Main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.locust.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--duration", type=int, help="seconds of the whole load shape")
    length.add_argument(
        "--quick", action="store_true", help=f"a {QUICK_SECONDS} s smoke run of the same shape"
    )
    parser.add_argument("--rate", type=float, help="the scenario's main rate (TG_RATE)")
    parser.add_argument("--port", type=int, default=18770, help=f"port on {HOST}")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--pool-max", type=int, help="the server's HOTPATH_POOL_MAX (default: the setting's)"
    )
    parser.add_argument(
        "--no-admin",
        action="store_true",
        help="dashboard users leave out Django admin's event list (summary and page only)",
    )
    apart = parser.add_mutually_exclusive_group()
    apart.add_argument(
        "--admin-server",
        action="store_true",
        help="serve Django admin's pages from a second server process on PORT+1, as a "
        "deployment that routes /admin/ apart does",
    )
    apart.add_argument(
        "--web-server",
        action="store_true",
        help="serve everything the dashboard users ask for (sign-in, page, summary, admin) "
        "from a second server process on PORT+1, as a deployment that routes all but the "
        "hot path apart does",
    )
    parser.add_argument(
        "--second-nice",
        type=int,
        default=0,
        metavar="N",
        help="run the second server at niceness N (1-19: a lower CPU priority than the "
        "hot path's server)",
    )
    parser.add_argument(
        "--second-idle",
        action="store_true",
        help="run the second server under the SCHED_IDLE policy (chrt --idle 0): it gets a "
        "core only when the hot path does not want it",
    )
    parser.add_argument(
        "--cycles",
        type=int,
        default=1,
        metavar="N",
        help="mixed only: alternate N phases with the dashboard users and N+1 without, "
        "instead of one of each between two without (default 1: the three phases)",
    )
    parser.add_argument(
        "--aggregate-every",
        type=float,
        metavar="SECONDS",
        help="the worker's aggregation interval (default: run_worker's)",
    )
    parser.add_argument("--max-error-pct", type=float, default=1.0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Tollgate setting for the servers and the worker (repeatable); "
        "the report is named after it",
    )
    args = parser.parse_args(argv)
    args.settings = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.isupper():
            parser.error(f"--set takes NAME=VALUE, not {item!r}")
        args.settings[name] = value
    scenario = SCENARIOS[args.scenario]
    if args.duration is None:
        args.duration = QUICK_SECONDS if args.quick else scenario.seconds
    if args.rate is None:
        args.rate = scenario.rate
    if args.second_nice and second_server_role(args) is None:
        parser.error("--second-nice needs --admin-server or --web-server")
    if not 0 <= args.second_nice <= 19:
        parser.error("--second-nice must be between 0 and 19")
    if args.second_idle and second_server_role(args) is None:
        parser.error("--second-idle needs --admin-server or --web-server")
    if args.cycles < 1 or (args.cycles > 1 and args.scenario != "mixed"):
        parser.error("--cycles takes a number from 1 up, for the mixed scenario")
    return args


def report_command(args: argparse.Namespace, scenario: Scenario) -> str:
    """The command line that repeats this run, as its report shows it."""
    command = f".venv/bin/python -m loadtests.locust.run {args.scenario}" + (
        " --quick" if args.quick else f" --duration {args.duration}"
    )
    if args.rate != scenario.rate:
        command += f" --rate {args.rate:g}"
    if args.pool_max is not None:
        command += f" --pool-max {args.pool_max}"
    if args.no_admin:
        command += " --no-admin"
    if second_server_role(args):
        command += f" --{second_server_role(args)}-server"
    if args.second_nice:
        command += f" --second-nice {args.second_nice}"
    if args.second_idle:
        command += " --second-idle"
    if args.cycles > 1:
        command += f" --cycles {args.cycles}"
    if args.aggregate_every is not None:
        command += f" --aggregate-every {args.aggregate_every:g}"
    for name, value in sorted(args.settings.items()):
        command += f" --set {shlex.quote(f'{name}={value}')}"
    return command


def run_name(args: argparse.Namespace) -> str:
    """The name of a run's report and CSV files: the scenario, and the variant."""
    return (
        args.scenario
        + (f"-{second_server_role(args)}-server" if second_server_role(args) else "")
        + (f"-nice{args.second_nice}" if args.second_nice else "")
        + ("-idle" if args.second_idle else "")
        + (f"-cycles{args.cycles}" if args.cycles > 1 else "")
        + (f"-agg{args.aggregate_every:g}s" if args.aggregate_every is not None else "")
        + ("-no-admin" if args.no_admin else "")
        + "".join(_setting_name(name, value) for name, value in sorted(args.settings.items()))
    )


def _setting_name(name: str, value: str) -> str:
    """A setting in a file name: with its value when that is a plain word or
    number, else (a URL: REDIS_URL) the name alone."""
    if re.fullmatch(r"[A-Za-z0-9._-]+", value):
        return f"-{name.lower()}-{value}"
    return f"-{name.lower()}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # Before Django reads its settings: they must load with these values too.
    os.environ.update(args.settings)
    django_setup()
    unknown = [name for name in args.settings if not is_setting(name)]
    if unknown:
        print(f"run_locust: not a Tollgate setting: {', '.join(unknown)}", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    t0 = time.monotonic()
    try:
        results = run(args)
    except DesignFailed as exc:
        print(f"run_locust: {exc}", file=sys.stderr)
        return 1
    text = report(args, results, started)
    path = REPORT_DIR / f"locust-{run_name(args)}.md"
    path.write_text(text)
    print(text)
    print(f"Written to {path.relative_to(BASE_DIR)} in {time.monotonic() - t0:.0f} s")
    total, failures = request_totals(results["rows"])
    return 0 if total and 100 * failures / total <= args.max_error_pct else 1


if __name__ == "__main__":
    sys.exit(main())
