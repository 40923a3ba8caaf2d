"""Phases of the locust scenarios: the mixed scenario's phase names and the
recorder that keeps every response time per phase, so that a report can give
exact percentiles for "sustained" and "burst" (or "without" and "with
dashboard") separately, which locust's own cumulative statistics cannot.

No locust import here (it monkey-patches the standard library on import): the
wrapper that reports on a run (loadtests/locust/run.py) and the tests import
this module.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

ALONE = "hot path alone"
WITH_DASHBOARD = "with dashboard"
# A shape that repeats a pair of phases (mixed --cycles) names them "<arm> #<k>";
# the report then also pools each arm's phases.
CYCLE_MARK = " #"


def arm_of(phase: str) -> str:
    """The arm a phase belongs to: "with dashboard #3" -> "with dashboard"."""
    return phase.partition(CYCLE_MARK)[0]


def alternating(cycles: int) -> list[str]:
    """The 2N+1 phases of mixed --cycles N: each phase with the dashboard users
    between two without ("hot path alone #1", "with dashboard #1", ...,
    "hot path alone #N+1")."""
    names = []
    for k in range(1, cycles + 1):
        names += [f"{ALONE}{CYCLE_MARK}{k}", f"{WITH_DASHBOARD}{CYCLE_MARK}{k}"]
    return [*names, f"{ALONE}{CYCLE_MARK}{cycles + 1}"]


# The name under which a request's own time on the server is filed, after the
# request's name: "reserve (server)".
SERVER_TIME = " (server)"


def server_time(header: str | None) -> float | None:
    """The `app;dur=<ms>` of a Server-Timing header (Tollgate's time for the
    request), or None."""
    for entry in (header or "").split(","):
        metric, _, duration = entry.strip().partition(";dur=")
        if metric == "app" and duration:
            return float(duration)
    return None


# --- Recorder ----------------------------------------------------------------------------


class Recorder:
    """Every response time (ms) and failure per (phase, request name)."""

    def __init__(self) -> None:
        self.times: dict[tuple[str, str], list[float]] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.errors: dict[str, int] = {}
        self.phase_seconds: dict[str, list[float]] = {}  # phase -> [first, last] monotonic
        self.lag: dict[str, list[float]] = {}  # phase -> how late the lag probe woke (ms)

    def add(self, phase: str, name: str, response_time: float, exception: Any) -> None:
        now = time.monotonic()
        span = self.phase_seconds.setdefault(phase, [now, now])
        span[1] = now
        self.times.setdefault((phase, name), []).append(response_time)
        if exception is not None:
            self.failures[(phase, name)] = self.failures.get((phase, name), 0) + 1
            message = str(exception)[:160]
            self.errors[message] = self.errors.get(message, 0) + 1

    def rows(self) -> list[dict[str, Any]]:
        return [
            response_row(
                phase,
                name,
                sorted(times),
                self.failures.get((phase, name), 0),
                self._span(phase),
            )
            for (phase, name), times in self.times.items()
        ]

    def arm_rows(self) -> list[dict[str, Any]]:
        """The repeated phases' responses pooled per arm (empty unless the
        shape repeats phases): one percentile over every "with dashboard #k"."""
        times: dict[tuple[str, str], list[float]] = {}
        failures: dict[tuple[str, str], int] = {}
        for (phase, name), phase_times in self.times.items():
            if CYCLE_MARK in phase:
                key = (arm_of(phase), name)
                times.setdefault(key, []).extend(phase_times)
                failures[key] = failures.get(key, 0) + self.failures.get((phase, name), 0)
        seconds: dict[str, float] = {}
        for phase in self.phase_seconds:
            if CYCLE_MARK in phase:
                seconds[arm_of(phase)] = seconds.get(arm_of(phase), 0.0) + self._span(phase)
        return [
            response_row(arm, name, sorted(arm_times), failures[(arm, name)], seconds[arm])
            for (arm, name), arm_times in times.items()
        ]

    def _span(self, phase: str) -> float:
        first, last = self.phase_seconds[phase]
        return last - first

    def lag_rows(self, by_arm: bool = False) -> list[dict[str, Any]]:
        lags: dict[str, list[float]] = {}
        for phase, phase_lags in self.lag.items():
            if not by_arm:
                lags[phase] = phase_lags
            elif CYCLE_MARK in phase:
                lags.setdefault(arm_of(phase), []).extend(phase_lags)
        rows = []
        for phase, unordered in lags.items():
            ordered = sorted(unordered)
            rows.append(
                {
                    "phase": phase,
                    "samples": len(ordered),
                    "p50_ms": percentile(ordered, 50),
                    "p99_ms": percentile(ordered, 99),
                    "p999_ms": percentile(ordered, 99.9),
                    "max_ms": ordered[-1],
                    "over_1ms": sum(1 for lag in ordered if lag > 1) / len(ordered),
                }
            )
        return rows

    def print_summary(self) -> None:
        print(
            f"\n{'phase':<22} {'request':<26} {'reqs':>7} {'rps':>7} {'fail%':>6} "
            f"{'p50':>7} {'p95':>7} {'p99':>7}"
        )
        for r in self.rows():
            fail = 100 * r["failures"] / r["requests"]
            print(
                f"{r['phase']:<22} {r['name']:<26} {r['requests']:>7} {r['rps']:>7.1f} "
                f"{fail:>6.2f} {r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {r['p99_ms']:>7.1f}"
            )
        for message, count in sorted(self.errors.items(), key=lambda item: -item[1])[:10]:
            print(f"  error x{count}: {message}")

    def dump(self, path: str) -> None:
        with open(path, "w") as out:
            # Phase spans are time.monotonic(), one clock for every process
            # on the machine: run_locust matches them with its CPU samples.
            json.dump(
                {
                    "rows": self.rows(),
                    "errors": self.errors,
                    "phases": self.phase_seconds,
                    "lag": self.lag_rows(),
                    "arms": self.arm_rows(),
                    "arm_lag": self.lag_rows(by_arm=True),
                },
                out,
                indent=1,
            )


def response_row(
    phase: str, name: str, ordered: list[float], failures: int, seconds: float
) -> dict[str, Any]:
    """One line of a report: `ordered` response times (ms) over `seconds`."""
    return {
        "phase": phase,
        "name": name,
        "requests": len(ordered),
        "failures": failures,
        "seconds": seconds,
        "rps": len(ordered) / max(seconds, 1e-9),
        "p50_ms": percentile(ordered, 50),
        "p95_ms": percentile(ordered, 95),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1],
    }


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]
