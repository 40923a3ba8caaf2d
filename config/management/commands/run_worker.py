from __future__ import annotations

import logging
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from config.jobs import JOBS
from config.management.stopping import StopRequest

logger = logging.getLogger("tollgate.worker")


class Command(BaseCommand):
    help = (
        "Run the periodic jobs that the apps register, in one process with one log stream: "
        "reservation expiry, alert delivery (deliver_alerts), the deletion of holds closed "
        "more than RESERVATION_RETENTION_DAYS ago, and usage aggregation (aggregate_usage). "
        "Stops cleanly on SIGTERM or Ctrl-C after the current job. Reports go to the "
        "log (logger tollgate.worker, in LOG_FORMAT), not to stdout."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--interval",
            type=float,
            default=5.0,
            help="Seconds between rounds of the quick jobs (expiry, alerts, pruning).",
        )
        parser.add_argument(
            "--aggregate-every",
            type=float,
            default=30.0,
            help="Seconds between passes of the heavy jobs (usage aggregation).",
        )
        parser.add_argument("--once", action="store_true", help="Run each job once and exit.")

    def handle(self, *args, interval: float, aggregate_every: float, once: bool, **options) -> None:
        if interval <= 0 or aggregate_every <= 0:
            raise CommandError("--interval and --aggregate-every must be positive.")
        next_aggregation = 0.0
        with StopRequest() as stop:
            quick = [job for job in JOBS.values() if not job.heavy]
            heavy = [job for job in JOBS.values() if job.heavy]
            logger.info(
                "Worker started: %d quick jobs every %g s, %d heavy every %g s.",
                len(quick),
                interval,
                len(heavy),
                aggregate_every,
            )
            while not stop.requested:
                for job in quick:
                    self.run_job(job.name, job.run)
                if time.monotonic() >= next_aggregation:
                    for job in heavy:
                        self.run_job(job.name, job.run)
                    next_aggregation = time.monotonic() + aggregate_every
                if once:
                    return
                stop.sleep(interval)
            logger.info("Worker stopped on %s.", stop.signal_name)

    def run_job(self, name: str, job) -> None:
        """A failing job (database down, a bug) is logged; the others go on.
        Each line names its job (also as the field `job` in JSON logs)."""
        try:
            message = job()
        except DatabaseError as exc:
            logger.warning(
                "[%s] database unavailable: %s", name, str(exc).strip(), extra={"job": name}
            )
            connection.close()  # reconnect next round
            return
        except Exception:
            logger.exception("[%s] failed", name, extra={"job": name})
            return
        if message:
            logger.info("[%s] %s", name, message, extra={"job": name})
