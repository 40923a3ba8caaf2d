"""Locust scenario: log shippers posting batches of 100 events at a steady rate.

TG_RATE batches per second (default 10, i.e. 1,000 events/s) for TG_DURATION
seconds (default 300), every event new (stored, priced, added to its budget
windows). For the maximum ingest rate use the wrk harness (loadtests/ingest.py);
this one measures latency at a given rate.

    .venv/bin/python -m loadtests.locust.run ingest [--quick]
"""

from __future__ import annotations

from loadtests.locust.common import Stage, StagedShape, env_float
from loadtests.locust.users import INGEST_BATCHES_PER_USER, IngestUser

__all__ = ["IngestShape", "IngestUser"]

DURATION = env_float("TG_DURATION", 300)
RATE = env_float("TG_RATE", 10)


class IngestShape(StagedShape):
    def stages(self) -> list[Stage]:
        users = max(1, round(RATE / INGEST_BATCHES_PER_USER))
        return [Stage("steady", DURATION, users, users)]
