"""The periodic jobs that `manage.py run_worker` runs, registered by each app
from its AppConfig.ready(), so that the worker imports no app.

A job returns a line for the log, or "" when it had nothing to do. Quick jobs
run every round (--interval); heavy ones at their own pace (--aggregate-every).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[], str]
    heavy: bool = False


JOBS: dict[str, Job] = {}


def register(name: str, run: Callable[[], str], *, heavy: bool = False) -> None:
    JOBS[name] = Job(name, run, heavy)
