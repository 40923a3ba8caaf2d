from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from budgets.services import alerts_deliver_due, reservations_prune
from tracking.management.stopping import StopRequest
from tracking.services import rollups_refresh

logger = logging.getLogger("tollgate.worker")


class Command(BaseCommand):
    help = (
        "Run the periodic jobs in one process with one log stream: usage aggregation "
        "(aggregate_usage), reservation expiry, alert delivery (deliver_alerts) and the "
        "deletion of holds closed more than RESERVATION_RETENTION_DAYS ago. "
        "Stops cleanly on SIGTERM or Ctrl-C after the current job. Reports go to the "
        "log (logger tollgate.worker, in LOG_FORMAT), not to stdout."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--interval",
            type=float,
            default=5.0,
            help="Seconds between rounds of expiry and alert delivery.",
        )
        parser.add_argument(
            "--aggregate-every",
            type=float,
            default=30.0,
            help="Seconds between aggregation passes.",
        )
        parser.add_argument("--once", action="store_true", help="Run each job once and exit.")

    def handle(self, *args, interval: float, aggregate_every: float, once: bool, **options) -> None:
        if interval <= 0 or aggregate_every <= 0:
            raise CommandError("--interval and --aggregate-every must be positive.")
        next_aggregation = 0.0
        with StopRequest() as stop:
            logger.info(
                "Worker started: expiry and alerts every %g s, aggregation every %g s.",
                interval,
                aggregate_every,
            )
            while not stop.requested:
                self.run_job("expire reservations", self.expire_reservations)
                self.run_job("deliver alerts", self.deliver_alerts)
                self.run_job("prune reservations", self.prune_reservations)
                if time.monotonic() >= next_aggregation:
                    self.run_job("aggregate usage", self.aggregate_usage)
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

    def expire_reservations(self) -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT tollgate_expire_reservations(1000)")
            expired = cursor.fetchone()[0]
        return f"{expired} expired" if expired else ""

    def prune_reservations(self) -> str:
        days = settings.RESERVATION_RETENTION_DAYS
        if not days:
            return ""
        # A batch a round: a backlog (a first run on a large table) goes at
        # RESERVATION_PRUNE_BATCH a round without one long transaction.
        deleted = reservations_prune(older_than=timedelta(days=days))
        return f"{deleted} holds closed more than {days:g} days ago deleted" if deleted else ""

    def deliver_alerts(self) -> str:
        report = alerts_deliver_due()
        if not (report.delivered or report.retrying or report.failed):
            return ""
        return (
            f"{report.delivered} delivered, {report.retrying} will retry, "
            f"{report.failed} failed for good"
        )

    def aggregate_usage(self) -> str:
        started = time.monotonic()
        report = rollups_refresh()
        if not report.events:
            return ""
        return (
            f"{report.events} events into {report.buckets} hour buckets "
            f"in {time.monotonic() - started:.2f} s"
        )
