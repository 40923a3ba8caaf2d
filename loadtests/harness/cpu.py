"""CPU accounting of a run from /proc: the server, PostgreSQL, a worker, the
load generator and everything else, in percent of one core.

The box has few cores and may be shared: where the CPU went during a run
tells a CPU-bound server from a database-bound one, and a quiet machine from
a busy one (whose numbers are noise)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

# Above this share of a core used by other processes, a run is flagged as noisy.
NOISY_OTHER_CPU_PCT = 10.0
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
    worker: float | None = None  # `manage.py run_worker`, where a run has one
    second: float | None = None  # a second server (admin's or all Django pages), if any
    generator: float | None = None  # a load generator still running (locust)
    machine: float | None = None  # every process, ours included


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


def cpu_shares(
    before: CpuSample,
    after: CpuSample,
    server_group: int,
    worker_group: int | None = None,
    second_group: int | None = None,
    generator_group: int | None = None,
) -> CpuShares:
    def used(pids: set[int]) -> float:
        return sum(after.procs[p][2] - before.procs.get(p, (0, 0, 0.0))[2] for p in pids)

    def group(pgrp: int) -> set[int]:
        return {pid for pid, (_, g, _) in after.procs.items() if g == pgrp}

    elapsed = after.at - before.at
    server = used(group(server_group))
    worker = None if worker_group is None else used(group(worker_group))
    second = None if second_group is None else used(group(second_group))
    # A load generator still running (not yet among the reaped children).
    generator = 0.0 if generator_group is None else used(group(generator_group))
    postmaster = postmaster_pid()
    postgres = used(_descendants(postmaster, after.procs)) if postmaster in after.procs else None
    ours = (
        server
        + (worker or 0.0)
        + (second or 0.0)
        + generator
        + (postgres or 0.0)
        + used({os.getpid()} & after.procs.keys())
        + (after.reaped_children - before.reaped_children)
    )
    other = max(after.box_busy - before.box_busy - ours, 0.0)
    return CpuShares(
        server=100 * server / elapsed,
        postgres=None if postgres is None else 100 * postgres / elapsed,
        other=100 * other / elapsed,
        worker=None if worker is None else 100 * worker / elapsed,
        second=None if second is None else 100 * second / elapsed,
        generator=None if generator_group is None else 100 * generator / elapsed,
        machine=100 * (after.box_busy - before.box_busy) / elapsed,
    )
