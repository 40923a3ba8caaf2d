"""One bounded, closed-loop wrk measurement of a server process, shared by the
server comparison (loadtests/servers.py) and the pool sizing run
(loadtests/pool.py). Built on compare.py's helpers (server start/stop, CPU
accounting, seed data, machine details) without changing them.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from loadtests import compare

HOST = compare.HOST
# wrk runs this long before each measured run (connections, caches, plans).
WARMUP_SECONDS = 3


@dataclass
class Measurement:
    label: str
    rps: float = 0.0  # 2xx answers per second
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    socket_errors: int = 0
    cpu: compare.CpuShares | None = None
    failure: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def non_2xx(self) -> int:
        return sum(self.statuses.values()) - compare.count_2xx(self.statuses)

    @property
    def noisy(self) -> bool:
        return self.cpu is not None and self.cpu.other > compare.NOISY_OTHER_CPU_PCT

    @property
    def clean(self) -> bool:
        return not self.failure and self.non_2xx == 0 and self.socket_errors == 0


def run_wrk(port: int, key: str, path: str, seconds: int, connections: int) -> dict[str, Any]:
    """wrk with loadtests/wrk/reservations.lua (its bodies suit /check too) on `path`."""
    argv = [
        "wrk",
        f"-t{compare.WRK_THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        compare.WRK_TIMEOUT,
        "-s",
        str(compare.LUA_SCRIPT),
        f"http://{HOST}:{port}{path}",
    ]
    env = {
        **os.environ,
        "TOLLGATE_API_KEY": key,
        "BENCH_TEAMS": str(compare.TEAMS),
        "BENCH_USERS_PER_TEAM": str(compare.USERS_PER_TEAM),
    }
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise compare.DesignFailed(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return compare.lua_result(done.stdout)


def measure(
    label: str,
    design: compare.Design,
    port: int,
    key: str,
    *,
    path: str = compare.PATH,
    seconds: int,
    connections: int,
    warmup: int = WARMUP_SECONDS,
    before_load: Any = None,
) -> Measurement:
    """Fresh windows, the server up, `before_load(port)` if given (its result
    lands in `extra["before_load"]`), warm-up, then the measured run."""
    result = Measurement(label)
    compare.reset_windows()
    log = compare.RESULTS_DIR / f"{_slug(label)}.server.log"
    try:
        with compare.serve(design, port, log) as server:
            if before_load is not None:
                result.extra["before_load"] = before_load(port)
            run_wrk(port, key, path, warmup, connections)
            before = compare.sample_cpu()
            lua = run_wrk(port, key, path, seconds, connections)
            result.cpu = compare.cpu_shares(before, compare.sample_cpu(), server.pid)
    except (compare.DesignFailed, OSError, subprocess.TimeoutExpired) as exc:
        result.failure = str(exc)
        return result
    seconds_run = lua["duration_us"] / 1e6
    result.statuses = lua["statuses"]
    result.rps = compare.count_2xx(result.statuses) / seconds_run
    result.p50_ms, result.p95_ms, result.p99_ms = (lua[f"p{p}_us"] / 1000 for p in (50, 95, 99))
    result.max_ms = lua.get("max_us", 0) / 1000
    result.socket_errors = sum(lua["errors"].values())
    return result


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def flags(m: Measurement) -> str:
    marks = []
    if m.noisy:
        marks.append("⚠ noisy")
    if not m.failure and not m.clean:
        marks.append(f"⚠ {m.non_2xx} non-2xx, {m.socket_errors} socket errors")
    return f" ({', '.join(marks)})" if marks else ""


def median_run(runs: list[Measurement]) -> Measurement:
    """The run with the median RPS of several rounds of the same configuration
    (a real run, so its percentiles and CPU belong together), with every
    round's RPS in `extra["rounds_rps"]`. A failed round makes the result fail."""
    failed = next((m for m in runs if m.failure), None)
    if failed is not None:
        return failed
    ordered = sorted(runs, key=lambda m: m.rps)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.extra["rounds_rps"] = [round(m.rps) for m in runs]
    return chosen


def rounds_cell(m: Measurement) -> str:
    rounds = m.extra.get("rounds_rps", [])
    return ", ".join(f"{r:,}" for r in rounds) if len(rounds) > 1 else ""


def round_orders(items: list, rounds: int) -> list[list]:
    """Forward, backward, forward...: a machine that gets busier or quieter
    during the run does not always favour the same configuration."""
    return [items if r % 2 == 0 else items[::-1] for r in range(rounds)]
