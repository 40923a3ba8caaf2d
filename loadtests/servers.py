"""Issue 5 §3: which ASGI server runs Tollgate in production.

    .venv/bin/python -m loadtests.servers [--duration 15] [--connections 50] [--port 18775]

Serves `config.asgi:application` with daphne (1 process: it has no worker
option), uvicorn (uvloop + httptools) and granian (Rust HTTP, uvloop), each
with 1 and 2 worker processes, back to back on the same seeded data as
loadtests/harness/seed.py (org `bench`, 20 teams x 10 users, one org day budget:
every hold locks the same window row). Each run: fresh windows, a fresh server
process, a websocket check, 3 s of warm-up, then `wrk -t2 -c50` closed loop on
`POST /v1/budget/reservations` for --duration seconds.

The websocket check signs a staff user in (a real session row), opens
`/ws/spend/` with its cookie, waits for the consumer's `hello`, then records
one event through the API and waits for its live message: the dashboard's
live updates must work under the production server.

Writes docs/benchmarks/servers.md (table, CPU split, noise flags, machine).
Hot-path pool: HOTPATH_POOL_MIN = HOTPATH_POOL_MAX = --pool per worker.
Only 127.0.0.1; every server is stopped on the way out.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import signal
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime

from loadtests.harness.cpu import NOISY_OTHER_CPU_PCT
from loadtests.harness.paths import BASE_DIR, RESULTS_DIR
from loadtests.harness.seed import HOLD_USD, ORG_SLUG, TEAMS, USERS_PER_TEAM, django_setup, seed
from loadtests.harness.servers import Design
from loadtests.reports.markdown import cpu_cells, machine
from loadtests.wrk import bench
from loadtests.wrk.bench import HOST, Measurement
from loadtests.wrk.run import WRK_THREADS

REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "servers.md"
VIEWER = "bench-ws-viewer"


def server_designs(port: int, pool: int) -> list[tuple[str, int, Design]]:
    python = sys.executable
    app = "config.asgi:application"
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOG_LEVEL": "WARNING",
        "HOTPATH_POOL_MIN": str(pool),
        "HOTPATH_POOL_MAX": str(pool),
    }
    runs = [
        (
            "daphne",
            1,
            Design(
                "tollgate",
                "daphne",
                "daphne 1 process (no worker option)",
                [python, "-m", "daphne", "-b", HOST, "-p", str(port), "-v", "0", app],
                env,
            ),
        )
    ]
    for workers in (1, 2):
        runs.append(
            (
                "uvicorn",
                workers,
                Design(
                    "tollgate",
                    f"uvicorn x{workers}",
                    f"uvicorn --workers {workers} --loop uvloop --http httptools",
                    [
                        python,
                        "-m",
                        "uvicorn",
                        app,
                        "--host",
                        HOST,
                        "--port",
                        str(port),
                        "--workers",
                        str(workers),
                        "--loop",
                        "uvloop",
                        "--http",
                        "httptools",
                        "--no-access-log",
                        "--log-level",
                        "warning",
                    ],
                    env,
                ),
            )
        )
        runs.append(
            (
                "granian",
                workers,
                Design(
                    "tollgate",
                    f"granian x{workers}",
                    f"granian --interface asgi --workers {workers} --loop uvloop",
                    [
                        python,
                        "-m",
                        "granian",
                        "--interface",
                        "asgi",
                        "--host",
                        HOST,
                        "--port",
                        str(port),
                        "--workers",
                        str(workers),
                        "--loop",
                        "uvloop",
                        "--log-level",
                        "warning",
                        app,
                    ],
                    env,
                ),
            )
        )
    return runs


# --- Websocket check -------------------------------------------------------------------


def viewer_session() -> str:
    """A signed-in session for a staff login of the bench org (its key)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    from budgets.models import Organization
    from dashboard.models import Membership

    user, _ = User.objects.get_or_create(username=VIEWER, defaults={"is_staff": True})
    user.set_unusable_password()
    user.save()
    Membership.objects.update_or_create(
        user=user, defaults={"org": Organization.objects.get(slug=ORG_SLUG)}
    )
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def websocket_check(port: int, key: str, session_key: str) -> str:
    """'ok' when /ws/spend/ greets a signed-in user and relays a live event."""
    from websockets.sync.client import connect

    try:
        with connect(
            f"ws://{HOST}:{port}/ws/spend/",
            additional_headers={
                "Cookie": f"sessionid={session_key}",
                "Origin": f"http://{HOST}:{port}",
            },
            open_timeout=10,
        ) as ws:
            hello = json.loads(ws.recv(timeout=10))
            if hello.get("type") != "hello":
                return f"no hello: {hello}"
            _post_event(port, key)
            try:
                live = json.loads(ws.recv(timeout=10))
            except TimeoutError:
                return "hello ok; no live event within 10 s"
            return f"ok (hello, then live `{live.get('type', '?')}`)"
    except Exception as exc:
        return f"FAILED: {type(exc).__name__}: {exc}"


def _post_event(port: int, key: str) -> None:
    body = {
        "id": f"ws-check-{uuid.uuid4().hex}",
        "team": "team-01",
        "user": "user-01-01",
        "model": "gpt-4o",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    }
    request = urllib.request.Request(
        f"http://{HOST}:{port}/v1/events",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


# --- Report --------------------------------------------------------------------------------


def report(rows: list[tuple[str, int, Measurement]], args: argparse.Namespace, started) -> str:
    base = next((m.rps for name, w, m in rows if name == "uvicorn" and w == 1 and m.rps), 0.0)
    lines = [
        "# Issue 5 §3: ASGI servers serving Tollgate",
        "",
        f"Generated by `.venv/bin/python -m loadtests.servers --duration {args.duration} "
        f"--connections {args.connections} --rounds {args.rounds}` on {started:%Y-%m-%d %H:%M} UTC.",
        "",
        "| server | workers | RPS (2xx) | vs uvicorn x1 | p50 ms | p95 ms | p99 ms "
        "| CPU server / Postgres / other | RPS of each round | websocket /ws/spend/ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, workers, m in rows:
        if m.failure:
            lines.append(f"| {name} | {workers} | FAILED: {m.failure[:80]} ||||||||")
            continue
        ratio = f"{m.rps / base:.2f}x" if base else "n/a"
        lines.append(
            f"| {name}{bench.flags(m)} | {workers} | {m.rps:,.0f} | {ratio} | {m.p50_ms:.1f} "
            f"| {m.p95_ms:.1f} | {m.p99_ms:.1f} | {cpu_cells(m.cpu)} "
            f"| {bench.rounds_cell(m)} | {m.extra.get('before_load', 'n/a')} |"
        )
    noisy = [f"{n} x{w}" for n, w, m in rows if m.noisy]
    lines += [
        "",
        f"- `POST /v1/budget/reservations`, ${HOLD_USD} holds over "
        f"{TEAMS} teams x {USERS_PER_TEAM} users of org `{ORG_SLUG}` "
        "with one org day budget (every hold locks the same window row); "
        f"`wrk -t{WRK_THREADS} -c{args.connections} -d{args.duration}s` closed loop "
        f"after {bench.WARMUP_SECONDS} s of warm-up; fresh server and fresh windows per row. "
        f"Hot-path pool {args.pool} per worker (`HOTPATH_POOL_MIN=HOTPATH_POOL_MAX`).",
        f"- {args.rounds} rounds, the order reversed every other round; each row is the round "
        "with the median RPS (its percentiles and CPU), the rounds' RPS beside it. RPS counts "
        "2xx answers only. Ratios are within this one run (same machine, minutes apart): on "
        "a shared machine compare ratios, not absolute numbers.",
        "- With 2 workers each process has its own pool and its own hold batcher, so holds "
        "on the one hot org row come from two processes and batch less.",
        "- websocket: a staff session opens `/ws/spend/`, must get `hello`, then an event "
        "posted through the API must arrive live. Without `REDIS_URL` the channel layer is "
        "in-memory per process, so with 2 workers the event reaches the socket only when "
        "the same process served both (production with several workers sets `REDIS_URL`).",
    ]
    if noisy:
        lines.append(
            f"- ⚠ provisional: processes outside the benchmark used more than "
            f"{NOISY_OTHER_CPU_PCT:.0f}% of a core during {', '.join(noisy)}."
        )
    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}" for p in ("daphne", "uvicorn", "granian", "uvloop")
    )
    lines += ["", "## Machine", "", *machine(), f"- Servers: {versions}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.servers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--port", type=int, default=18775)
    parser.add_argument("--pool", type=int, default=5, help="hot-path pool per worker")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server (median reported)")
    parser.add_argument(
        "--only", default="", help="comma-separated server names (daphne,uvicorn,granian)"
    )
    args = parser.parse_args(argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    django_setup()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    key = seed(key_name="loadtests.servers")
    session_key = viewer_session()
    only = set(filter(None, args.only.split(",")))
    runs = [r for r in server_designs(args.port, args.pool) if not only or r[0] in only]
    measured: dict[str, list[Measurement]] = {}
    for order in bench.round_orders(runs, args.rounds):
        for _name, _workers, design in order:
            print(f"== {design.name}: {design.server}", flush=True)
            t0 = time.monotonic()
            m = bench.measure(
                design.name,
                design,
                args.port,
                key,
                seconds=args.duration,
                connections=args.connections,
                before_load=lambda port: websocket_check(port, key, session_key),
            )
            measured.setdefault(design.name, []).append(m)
            print(
                f"  {m.rps:,.0f} RPS p99 {m.p99_ms:.1f} ms ws: {m.extra.get('before_load')} "
                f"{m.failure} ({time.monotonic() - t0:.0f} s)",
                flush=True,
            )
    rows = [(n, w, bench.median_run(measured[d.name])) for n, w, d in runs]
    text = report(rows, args, started)
    REPORT_PATH.write_text(text)
    print(text)
    return 0 if all(m.clean for _, _, m in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
