"""Tracking's periodic job, run by `manage.py run_worker` (config/jobs.py)."""

from __future__ import annotations

import time

from tracking.services import rollups_refresh


def aggregate_usage() -> str:
    started = time.monotonic()
    report = rollups_refresh()
    if not report.events:
        return ""
    return (
        f"{report.events} events into {report.buckets} hour buckets "
        f"in {time.monotonic() - started:.2f} s"
    )
