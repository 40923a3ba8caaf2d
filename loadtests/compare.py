"""The side-by-side benchmark of issue 5 §2: the reservation hot path next to its alternatives.

    .venv/bin/python -m loadtests.compare            # everything, ~12-15 min
    .venv/bin/python -m loadtests.compare --quick    # smoke run, ~2-4 min
    .venv/bin/python -m loadtests.compare --designs sync,tollgate --modes rates --rates 100,500
    .venv/bin/python -m loadtests.compare --designs floor,tollgate --modes closed,rates \
        --rates 500 --budgets six --output loadtests/results/six   # issue 26's realistic request

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

--budgets six: every request meets six budgets instead of the org's one:
the org's, its team's (model-filtered), its user's, its API key's and two
tag budgets, and sends a model and two tags (loadtests/harness/seed.py). The
baselines (sync, async) hold only their org, team and user budgets, so with
it compare Tollgate with the floor.

Only 127.0.0.1 is ever targeted. Every server started here is stopped on the
way out, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.harness.cpu import NOISY_OTHER_CPU_PCT, CpuShares, cpu_shares, sample_cpu
from loadtests.harness.paths import BASE_DIR, DOCS_DIR, RESULTS_DIR
from loadtests.harness.seed import (
    BUDGETS,
    delete_keys,
    django_setup,
    holds_in_database,
    reset_windows,
    seed,
)
from loadtests.harness.servers import (
    HOST,
    PORT,
    UVICORN_OPTIONS,
    Design,
    DesignFailed,
    free_port,
    serve,
)
from loadtests.reports.compare import fmt_ms, plot, plot_title, report
from loadtests.wrk.run import bench_env, count_2xx, lua_result, parse_wrk, run_wrk, smoke_request

REPORT_NAME = "compare.md"
PLOT_NAME = "compare-latency.png"
SLOW_PLOT_NAME = "compare-latency-slowdb.png"
# Warm-up rate of a fixed-rate run: enough to open pools and fill caches,
# low enough not to leave a backlog for the measured phase.
WARMUP_RATE = 50
# Slow database: requests sent one at a time to count database round trips.
ROUND_TRIP_PROBES = 10
SLOW_WARMUP_RATE = 10
DESIGN_KEYS = ("floor", "sync", "async", "tollgate")
MODES = ("closed", "rates", "slow")


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
    parser.add_argument(
        "--budgets",
        choices=BUDGETS,
        default="org",
        help="budget scenario: org (one org budget) or six (org, model-filtered team, user, "
        "key and two tag budgets, with a model and two tags per request)",
    )
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
        everything = (
            set(args.designs) == set(DESIGN_KEYS)
            and set(args.modes) == set(MODES)
            and args.budgets == "org"
        )
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
    # The load generators (wrk, openloop) build their bodies from it.
    os.environ["BENCH_BUDGETS"] = args.budgets
    key = seed(budgets=args.budgets)
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
    text = report(
        run, args, started, plots, warmup_rate=WARMUP_RATE, slow_warmup_rate=SLOW_WARMUP_RATE
    )
    path = args.output / REPORT_NAME
    path.write_text(text)
    print(f"\nWritten to {path} (plots: {', '.join(plots.values()) or 'none'})")
    ok = all(
        r.clean and r.holds_match(args.connections) for r in [*run.closed, *run.slow_closed]
    ) and not any(r.failure for r in [*run.rates, *run.slow_rates])
    return 0 if ok else 1


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
