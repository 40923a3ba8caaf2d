"""Hot-row behaviour (issue 5 §4): all traffic on one team vs. spread out.

    .venv/bin/python -m loadtests.hot_row [--duration 10] [--connections 50] [--port 18766]

Same server, data (loadtests/harness/seed.py) and load generator as loadtests/compare.py (Tollgate's hot
path on uvicorn, wrk closed loop), with one more budget: a day budget on
`team-01`. Then, one after another in fresh server processes:

- spread:   holds over 20 teams x 10 users (only the org window is shared);
- one team: every hold from team-01 and one user, so every hold locks the
            same two windows (org and team);

each with 1 and 2 uvicorn workers. With one row taking every hold, holds are
serial on that row: the run shows whether that, rather than CPU, caps
throughput. Writes docs/benchmarks/hot-row.md; the team budget is removed
again at the end (compare.py's scenario has only the org budget).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from loadtests.harness.cpu import NOISY_OTHER_CPU_PCT, CpuShares, cpu_shares, sample_cpu
from loadtests.harness.paths import BASE_DIR, RESULTS_DIR
from loadtests.harness.seed import (
    HOLD_USD,
    ORG_DAY_LIMIT,
    ORG_SLUG,
    TEAMS,
    USERS_PER_TEAM,
    delete_keys,
    django_setup,
    reset_windows,
    seed,
)
from loadtests.harness.servers import HOST, UVICORN_OPTIONS, DesignFailed, serve
from loadtests.reports.markdown import cpu_cells, write_report
from loadtests.wrk.run import count_2xx, lua_result, parse_wrk, run_wrk, smoke_request

REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "hot-row.md"
HOT_TEAM = "team-01"
WARMUP_SECONDS = 3


# Only the harness's building blocks (serve, smoke_request, run_wrk, parse_wrk,
# the CPU accounting), not compare's designs and results, which are its own report's.
@dataclass(frozen=True)
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]


@dataclass
class Run:
    server: Server
    traffic: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    cpu: CpuShares | None = None
    failure: str = ""
    answered_2xx: int = 0
    held_rows: int = 0
    held_in_org_window: int = 0

    @property
    def clean(self) -> bool:
        noisy = self.cpu is not None and self.cpu.other > NOISY_OTHER_CPU_PCT
        return not self.failure and not noisy and self.non_2xx == 0 and not self.socket_errors

    def holds_match(self, connections: int) -> bool:
        """Every 2xx is held (requests in flight when wrk stops are held but
        not counted: at most one per connection, for warm-up and run)."""
        return self.held_rows == self.held_in_org_window and (
            self.answered_2xx <= self.held_rows <= self.answered_2xx + 2 * connections
        )


def tollgate(port: int, workers: int, pool_max: int) -> Server:
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "config.asgi:application",
        "--host",
        HOST,
        "--port",
        str(port),
        *UVICORN_OPTIONS,
    ]
    argv[argv.index("--workers") + 1] = str(workers)
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "HOTPATH_POOL_MIN": str(pool_max),
        "HOTPATH_POOL_MAX": str(pool_max),
        "LOG_LEVEL": "WARNING",
    }
    return Server(f"Tollgate, {workers} worker{'s' if workers > 1 else ''}", argv, env)


def add_team_budget() -> None:
    from budgets.models import Budget, Organization, Team

    org = Organization.objects.get(slug=ORG_SLUG)
    team = Team.objects.get(org=org, slug=HOT_TEAM)
    Budget.objects.update_or_create(
        org=org,
        scope=Budget.Scope.TEAM,
        team=team,
        period=Budget.Period.DAY,
        defaults={"limit_usd": ORG_DAY_LIMIT, "enforce": True},
    )


def remove_team_budget() -> None:
    from budgets.models import Budget

    reset_windows()  # its windows first: the windows' foreign key has no cascade
    Budget.objects.filter(org__slug=ORG_SLUG, scope=Budget.Scope.TEAM, team__slug=HOT_TEAM).delete()


def run(
    server: Server,
    traffic: str,
    subjects: tuple[int, int],
    args: argparse.Namespace,
    key: str,
) -> Run:
    result = Run(server, traffic)
    reset_windows()
    slug = f"hot-row-{server.argv[server.argv.index('--workers') + 1]}w-{traffic.replace(' ', '-')}"
    try:
        with serve(server, args.port, RESULTS_DIR / f"{slug}.log") as process:
            smoke = smoke_request(args.port, key)
            warmup = lua_result(run_wrk(args.port, key, WARMUP_SECONDS, args.connections, subjects))
            before = sample_cpu()
            output = run_wrk(args.port, key, args.duration, args.connections, subjects)
            result.cpu = cpu_shares(before, sample_cpu(), process.pid)
            (RESULTS_DIR / f"{slug}.wrk.txt").write_text(output)
            parse_wrk(output, result)
    except (DesignFailed, OSError, subprocess.TimeoutExpired) as exc:
        result.failure = str(exc)
        return result
    result.answered_2xx = (
        smoke.startswith("2") + count_2xx(warmup["statuses"]) + count_2xx(result.statuses)
    )
    result.held_rows, result.held_in_org_window = holds()
    return result


def holds() -> tuple[int, int]:
    """(reservations, holds in the org window) of the bench org."""
    from budgets.models import Budget, BudgetWindow, Reservation

    rows = Reservation.objects.filter(org__slug=ORG_SLUG).count()
    reserved = BudgetWindow.objects.get(
        budget__org__slug=ORG_SLUG, budget__scope=Budget.Scope.ORG
    ).reserved
    return rows, int(reserved / Decimal(HOLD_USD))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.hot_row", description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--port", type=int, default=18766, help="port on 127.0.0.1")
    parser.add_argument("--pool-max", type=int, default=5, help="hot-path pool size per worker")
    args = parser.parse_args(argv)
    django_setup()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    spread = (TEAMS, USERS_PER_TEAM)
    key = seed()
    add_team_budget()
    runs: list[Run] = []
    try:
        for workers in (1, 2):
            server = tollgate(args.port, workers, args.pool_max)
            for traffic, subjects in (("spread", spread), ("one team", (1, 1))):
                print(f"== {server.name}, {traffic}", flush=True)
                result = run(server, traffic, subjects, args, key)
                runs.append(result)
                print(f"  {result.rps:,.0f} RPS, p99 {result.p99_ms:.1f} ms {result.failure}")
    finally:
        delete_keys()
        remove_team_budget()
    lines = [
        "# Hot row: every hold on one team vs. spread over 200 subjects",
        "",
        f"Generated by `.venv/bin/python -m loadtests.hot_row --duration {args.duration} "
        f"--connections {args.connections}` on {started:%Y-%m-%d %H:%M} UTC.",
        "",
        "| server | traffic | RPS | p50 ms | p99 ms | non-2xx | CPU server / Postgres / other |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r.server.name}{'' if r.clean else ' ⚠'} | {r.traffic} "
            f"| {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.non_2xx} "
            f"| {cpu_cells(r.cpu)} |"
            if not r.failure
            else f"| {r.server.name} | {r.traffic} | FAILED: {r.failure} | | | | |"
            for r in runs
        ),
        "",
        f"- ${HOLD_USD} holds, `POST /v1/budget/reservations`, org "
        f"`{ORG_SLUG}` with an org day budget and a team day budget on `{HOT_TEAM}` "
        f"(both ${ORG_DAY_LIMIT:,}, never reached). spread: {spread[0]} teams x "
        f"{spread[1]} users, so only the org window is shared; one team: every hold from "
        f"`{HOT_TEAM}` and one user, so every hold locks the same two windows (org and team).",
        f"- `wrk -t2 -c{args.connections} -d{args.duration}s`, after a smoke request and "
        f"{WARMUP_SECONDS} s of warm-up, each row in a fresh server process; CPU as in "
        "issue2-compare.md (⚠: other processes used more than "
        f"{NOISY_OTHER_CPU_PCT:.0f}% of a core, or errors).",
        *(
            f"- ⚠ {r.server.name}, {r.traffic}: {r.answered_2xx:,} answers 2xx, the database "
            f"holds {r.held_rows:,} reservations and {r.held_in_org_window:,} holds in the org "
            "window: MISMATCH"
            for r in runs
            if not r.failure and not r.holds_match(args.connections)
        ),
        "",
    ]
    write_report(REPORT_PATH, lines)
    ok = all(r.clean and r.holds_match(args.connections) for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
