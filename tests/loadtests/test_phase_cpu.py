"""run_locust splits the CPU accounts by phase: each phase's shares come from
the samples taken inside its span, not from the run's total."""

from __future__ import annotations

from loadtests.harness.cpu import CpuSample
from loadtests.locust.run import CpuSampler

SERVER, WORKER, LOCUST = 100, 200, 300


def sample(at: float, server: float, locust: float, box: float) -> CpuSample:
    return CpuSample(
        at=at,
        box_busy=box,
        reaped_children=0.0,
        procs={
            SERVER: (1, SERVER, server),
            WORKER: (1, WORKER, 0.0),
            LOCUST: (1, LOCUST, locust),
        },
    )


def test_each_phase_gets_the_cpu_used_inside_its_span():
    sampler = CpuSampler()
    # The server uses half a core for the first 2 s, then a tenth; locust a
    # fifth throughout; the machine is busy 1.2 cores, then 0.4.
    sampler.samples = [
        sample(10.0, 0.0, 0.0, 0.0),
        sample(11.0, 0.5, 0.2, 1.2),
        sample(12.0, 1.0, 0.4, 2.4),
        sample(13.0, 1.1, 0.6, 2.8),
        sample(14.0, 1.2, 0.8, 3.2),
    ]
    phases = {"busy": [9.5, 12.5], "calm": [12.5, 14.0], "too short": [14.2, 14.9]}

    shares = sampler.shares_by_phase(phases, (SERVER, WORKER, None), LOCUST)

    assert set(shares) == {"busy", "calm"}  # one sample inside: no span to measure
    busy, calm = shares["busy"], shares["calm"]
    assert round(busy.server) == 50 and round(calm.server) == 10
    assert round(busy.generator) == 20 and round(calm.generator) == 20
    assert round(busy.machine) == 120 and round(calm.machine) == 40
    # The rest of the machine's busy time is other processes' (no PostgreSQL
    # among these fake processes).
    assert round(busy.other) == 50 and round(calm.other) == 10
    assert busy.second is None and round(busy.worker) == 0
