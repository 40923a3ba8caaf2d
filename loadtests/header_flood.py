"""Issue 25: hold latency during a header flood, on the production command.

    .venv/bin/python -m loadtests.header_flood [--rate 200] [--duration 15] [--cycles 2]
        [--flood-rate 20] [--flooders 16] [--headers 50000]

For each server command, in one run: the hot-path process as
docs/operations.md starts it (uvicorn, 2 workers, uvloop), once with uvicorn's
plain httptools parser (the command before issue 25) and once with the
documented `--http config.server:LimitedHttpToolsProtocol`. Against each, in
alternating phases of `--duration` seconds (`--cycles` times):

- quiet: holds (`POST /v1/budget/reservations`) at a fixed `--rate` from
  loadtests/harness/openloop.py (latency from the scheduled send, so a stall
  is charged in full);
- flood: the same holds while `--flooders` connections send unauthenticated
  `GET /accounts/login/` requests carrying `--headers` headers each (~1.1 MB
  at 50,000), `--flood-rate` a second in all (each flooder waits for its
  answer or the connection's end before its next; the issue saw ~4 a second
  suffice).

Writes docs/benchmarks/header-flood.md. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loadtests.harness.cpu import NOISY_OTHER_CPU_PCT, CpuShares, cpu_shares, sample_cpu
from loadtests.harness.paths import BASE_DIR, RESULTS_DIR
from loadtests.harness.seed import django_setup, reset_windows, seed
from loadtests.harness.servers import HOST, Design, DesignFailed, free_port, serve
from loadtests.reports.markdown import cpu_cells, write_report
from loadtests.wrk.run import bench_env

REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "header-flood.md"
FLOOD_PATH = "/accounts/login/"
GOAL = 2.0  # flood p99 within this many times the quiet p99

# The hot-path command of docs/operations.md, bound to loopback; `--http` varies.
COMMANDS = {
    "httptools (before)": "httptools",
    "production (limits)": "config.server:LimitedHttpToolsProtocol",
}


def design(http: str) -> Design:
    argv = [
        *(sys.executable, "-m", "uvicorn", "config.asgi:application"),
        *("--host", HOST, "--port", "{port}", "--workers", "2", "--loop", "uvloop"),
        *("--http", http, "--log-level", "warning"),
    ]
    env = {"DJANGO_SETTINGS_MODULE": "config.settings", "LOG_LEVEL": "WARNING"}
    return Design("tollgate", http, f"uvicorn 2 workers, --http {http}", argv, env)


def flood_request(headers: int) -> bytes:
    head = f"GET {FLOOD_PATH} HTTP/1.1\r\nHost: {HOST}\r\n".encode()
    return head + b"".join(b"X-Flood-%05d: 0123456789\r\n" % i for i in range(headers)) + b"\r\n"


@dataclass
class Flood:
    """`flooders` threads sending the flood request at `rate` a second in all."""

    port: int
    request: bytes
    rate: float
    flooders: int
    outcomes: Counter = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)  # per flood request, to its end
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Flood:
        self.threads = [
            threading.Thread(target=self._flood, args=(n,), daemon=True)
            for n in range(self.flooders)
        ]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _flood(self, n: int) -> None:
        interval = self.flooders / self.rate
        next_at = time.monotonic() + n * interval / self.flooders
        while not self.stop.is_set():
            wait = next_at - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                return
            next_at = max(next_at + interval, time.monotonic())
            started = time.monotonic()
            outcome = self._one()
            with self.lock:
                self.outcomes[outcome] += 1
                self.seconds.append(time.monotonic() - started)

    def _one(self) -> str:
        try:
            sock = socket.create_connection((HOST, self.port), timeout=10)
        except OSError:
            return "connect failed"
        with sock:
            try:
                sock.sendall(self.request)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before it was all sent: read what came back
            except TimeoutError:
                return "send timeout"
            answer = b""
            try:
                while len(answer) < 16 and (chunk := sock.recv(4096)):
                    answer += chunk
            except ConnectionResetError:
                pass
            except TimeoutError:
                return "read timeout"
        match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
        return match.group(1).decode() if match else "reset"


def run_openloop(port: int, key: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        *(sys.executable, "-m", "loadtests.harness.openloop", "--port", str(port)),
        *("--rate", str(args.rate), "--duration", str(args.duration), "--warmup", "1"),
        *("--warmup-rate", str(args.rate), "--timeout", "5"),
    ]
    done = subprocess.run(
        argv,
        env=bench_env(key),
        capture_output=True,
        text=True,
        timeout=args.duration + 90,
        cwd=BASE_DIR,
    )
    match = re.search(r"^OPENLOOP_RESULT (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise DesignFailed(f"openloop exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    return json.loads(match.group(1))


@dataclass
class Phase:
    command: str
    kind: str  # quiet | flood
    cycle: int
    holds: dict[str, Any]
    cpu: CpuShares
    flood: Counter | None = None
    flood_p50_s: float | None = None


def measure(name: str, http: str, key: str, args: argparse.Namespace) -> list[Phase]:
    port = free_port()
    phases: list[Phase] = []
    request = flood_request(args.headers)
    log = RESULTS_DIR / f"header-flood-{re.sub(r'[^a-z]+', '-', name).strip('-')}.log"
    with serve(design(http), port, log) as process:
        for cycle in range(1, args.cycles + 1):
            for kind in ("quiet", "flood"):
                reset_windows()
                before = sample_cpu()
                if kind == "quiet":
                    holds, flood = run_openloop(port, key, args), None
                else:
                    with Flood(port, request, args.flood_rate, args.flooders) as flood:
                        holds = run_openloop(port, key, args)
                cpu = cpu_shares(before, sample_cpu(), process.pid)
                phase = Phase(name, kind, cycle, holds, cpu)
                raw = RESULTS_DIR / f"{log.stem}-{kind}-{cycle}.openloop.json"
                raw.write_text(json.dumps(holds, indent=1))
                if flood is not None:
                    phase.flood = flood.outcomes
                    ordered = sorted(flood.seconds)
                    phase.flood_p50_s = ordered[len(ordered) // 2] if ordered else None
                phases.append(phase)
                print(
                    f"{name} {kind} #{cycle}: holds p50 {holds['p50_ms']} / p99 "
                    f"{holds['p99_ms']} ms, {holds['ok']}/{holds['scheduled']} ok"
                    + (f"; flood {dict(phase.flood)}" if phase.flood is not None else ""),
                    flush=True,
                )
    return phases


def _ms(value: float | None) -> str:
    return "failed" if value is None else f"{value:.1f}"


def _failures(holds: dict[str, Any]) -> str:
    """Non-2xx answers by status, and timeouts and lost connections, of a phase."""
    kinds = {f"HTTP {k}": v for k, v in holds["statuses"].items() if not k.startswith("2")}
    kinds |= {k: v for k, v in holds["errors"].items() if v}
    return ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) or "—"


def verdict(phases: list[Phase], command: str) -> str:
    quiet = [p.holds["p99_ms"] for p in phases if p.command == command and p.kind == "quiet"]
    flood = [p.holds["p99_ms"] for p in phases if p.command == command and p.kind == "flood"]
    if None in quiet or None in flood or not quiet or not flood:
        return "failed requests: no ratio"
    ratio = max(flood) / max(quiet)
    met = "met" if ratio <= GOAL else "**not met**"
    return f"worst flood p99 / worst quiet p99 = **{ratio:.2f}x** (goal ≤ {GOAL:g}x: {met})"


def report(phases: list[Phase], args: argparse.Namespace, started: datetime) -> list[str]:
    lines = [
        "# Issue 25: hold latency during a header flood",
        "",
        f"Generated by `.venv/bin/python -m loadtests.header_flood --rate {args.rate:g} "
        f"--duration {args.duration:g} --cycles {args.cycles} --flood-rate "
        f"{args.flood_rate:g} --flooders {args.flooders} --headers {args.headers}` "
        f"on {started:%Y-%m-%d %H:%M} UTC.",
        "",
        f"Holds at {args.rate:g}/s (open loop) against the hot-path command of "
        "docs/operations.md (uvicorn, 2 workers, uvloop), in alternating quiet and "
        f"flood phases of {args.duration:g} s. The flood: {args.flooders} connections "
        f"sending `GET {FLOOD_PATH}` with {args.headers:,} headers "
        f"({len(flood_request(args.headers)) / 1e6:.2f} MB), {args.flood_rate:g} a second "
        "in all, each flooder waiting for its answer first. A failed hold (timeout, "
        "non-2xx) counts as infinitely slow, so a p99 reads `failed` past 1% failures.",
        "",
        "| command | phase | holds ok / sent | holds failed (how) | p50 ms | p99 ms | max ms "
        "| flood requests (answer: count) | flood request p50 s | CPU server / Postgres / other |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for p in phases:
        flood = ", ".join(f"{k}: {v}" for k, v in sorted(p.flood.items())) if p.flood else "—"
        flood_s = "—" if p.flood_p50_s is None else f"{p.flood_p50_s:.3f}"
        noisy = " ⚠" if p.cpu.other > NOISY_OTHER_CPU_PCT else ""
        lines.append(
            f"| {p.command} | {p.kind} #{p.cycle} | {p.holds['ok']} / {p.holds['scheduled']} "
            f"| {_failures(p.holds)} | {_ms(p.holds['p50_ms'])} | {_ms(p.holds['p99_ms'])} | {_ms(p.holds['max_ms'])} "
            f"| {flood} | {flood_s} | {cpu_cells(p.cpu)}{noisy} |"
        )
    lines += ["", *(f"- {c}: {verdict(phases, c)}" for c in COMMANDS), ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.header_flood", description=__doc__)
    parser.add_argument("--rate", type=float, default=200, help="holds per second")
    parser.add_argument("--duration", type=float, default=15, help="seconds per phase")
    parser.add_argument("--cycles", type=int, default=2, help="quiet + flood phases per command")
    parser.add_argument("--flood-rate", type=float, default=20, help="flood requests per second")
    parser.add_argument("--flooders", type=int, default=16, help="flood connections at once")
    parser.add_argument("--headers", type=int, default=50_000, help="headers per flood request")
    parser.add_argument("--only", default="", help="comma-separated: before, production")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    django_setup()
    key = seed()
    phases: list[Phase] = []
    for name, http in COMMANDS.items():
        if args.only and not any(word in name for word in args.only.split(",")):
            continue
        phases += measure(name, http, key, args)
    write_report(REPORT_PATH, report(phases, args, started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
