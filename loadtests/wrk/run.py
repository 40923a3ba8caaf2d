"""Running wrk with reservations.lua against POST /v1/budget/reservations and
reading its results: wrk's own summary and the BENCH_RESULT line the Lua
script prints, which sees every status code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from loadtests.harness.seed import TEAMS, USERS_PER_TEAM, request_body, scenario
from loadtests.harness.servers import HOST, DesignFailed

# The Lua scripts live beside this module.
WRK_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = WRK_DIR / "reservations.lua"
PATH = "/v1/budget/reservations"
# wrk drops requests slower than its timeout from the latency statistics
# (default 2 s); a generous timeout keeps a slow design's tail in p99.
WRK_TIMEOUT = "10s"
WRK_THREADS = 2


def smoke_request(port: int, key: str) -> str:
    """One request before the load, so that an error body shows in the output."""
    body = request_body(1, 1, scenario()).encode()
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


def bench_env(key: str, subjects: tuple[int, int] = (TEAMS, USERS_PER_TEAM)) -> dict[str, str]:
    """wrk's environment: the key, and the teams x users per team the Lua
    script spreads its holds over (hot_row narrows them to one)."""
    teams, users_per_team = subjects
    return {
        **os.environ,
        "TOLLGATE_API_KEY": key,
        "BENCH_TEAMS": str(teams),
        "BENCH_USERS_PER_TEAM": str(users_per_team),
    }


def run_wrk(
    port: int,
    key: str,
    seconds: int,
    connections: int,
    subjects: tuple[int, int] = (TEAMS, USERS_PER_TEAM),
) -> str:
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
        argv, env=bench_env(key, subjects), capture_output=True, text=True, timeout=seconds + 60
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


def parse_wrk(output: str, result: Any) -> None:
    """Fill `result` (loadtests.compare's Result, or any object with its rps,
    requests, percentile, statuses, non_2xx and socket_errors fields) from
    wrk's own summary and the Lua result line, which sees every status code."""
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
