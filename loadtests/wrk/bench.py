"""One bounded, closed-loop wrk measurement of a server process, shared by the
server comparison (loadtests/servers.py) and the pool sizing run
(loadtests/pool.py), built on the harness (server start/stop, CPU accounting,
seed data) and wrk/run.py.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any

from loadtests.harness.cpu import NOISY_OTHER_CPU_PCT, CpuShares, cpu_shares, sample_cpu
from loadtests.harness.paths import RESULTS_DIR
from loadtests.harness.seed import reset_windows
from loadtests.harness.servers import HOST, Design, DesignFailed, serve
from loadtests.wrk.run import (
    LUA_SCRIPT,
    PATH,
    WRK_THREADS,
    WRK_TIMEOUT,
    bench_env,
    count_2xx,
    lua_result,
)

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
    cpu: CpuShares | None = None
    failure: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def non_2xx(self) -> int:
        return sum(self.statuses.values()) - count_2xx(self.statuses)

    @property
    def noisy(self) -> bool:
        return self.cpu is not None and self.cpu.other > NOISY_OTHER_CPU_PCT

    @property
    def clean(self) -> bool:
        return not self.failure and self.non_2xx == 0 and self.socket_errors == 0


def run_wrk(port: int, key: str, path: str, seconds: int, connections: int) -> dict[str, Any]:
    """wrk with loadtests/wrk/reservations.lua (its bodies suit /check too) on `path`."""
    argv = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        WRK_TIMEOUT,
        "-s",
        str(LUA_SCRIPT),
        f"http://{HOST}:{port}{path}",
    ]
    done = subprocess.run(
        argv, env=bench_env(key), capture_output=True, text=True, timeout=seconds + 60
    )
    if done.returncode != 0:
        raise DesignFailed(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return lua_result(done.stdout)


def measure(
    label: str,
    design: Design,
    port: int,
    key: str,
    *,
    path: str = PATH,
    seconds: int,
    connections: int,
    warmup: int = WARMUP_SECONDS,
    before_load: Any = None,
) -> Measurement:
    """Fresh windows, the server up, `before_load(port)` if given (its result
    lands in `extra["before_load"]`), warm-up, then the measured run."""
    result = Measurement(label)
    reset_windows()
    log = RESULTS_DIR / f"{_slug(label)}.server.log"
    try:
        with serve(design, port, log) as server:
            if before_load is not None:
                result.extra["before_load"] = before_load(port)
            run_wrk(port, key, path, warmup, connections)
            before = sample_cpu()
            lua = run_wrk(port, key, path, seconds, connections)
            result.cpu = cpu_shares(before, sample_cpu(), server.pid)
    except (DesignFailed, OSError, subprocess.TimeoutExpired) as exc:
        result.failure = str(exc)
        return result
    seconds_run = lua["duration_us"] / 1e6
    result.statuses = lua["statuses"]
    result.rps = count_2xx(result.statuses) / seconds_run
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
