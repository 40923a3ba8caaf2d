from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from budgets.services import alerts_deliver_due
from config.management.stopping import StopRequest


class Command(BaseCommand):
    help = (
        "Deliver pending alerts (budget thresholds, models with no price) to each "
        "organization's webhook (JSON with a Slack-compatible 'text'), with retries "
        "and backoff; every attempt is recorded."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--follow",
            action="store_true",
            help="Keep delivering every --interval seconds until SIGTERM/Ctrl-C.",
        )
        parser.add_argument("--interval", type=float, default=5.0)

    def handle(self, *args, follow: bool, interval: float, **options) -> None:
        if interval <= 0:
            raise CommandError("--interval must be positive.")
        if not follow:
            self.deliver_once()
            return
        with StopRequest() as stop:
            self.stdout.write(f"Delivering alerts every {interval:g} s.")
            while not stop.requested:
                try:
                    self.deliver_once()
                except DatabaseError as exc:
                    self.stderr.write(f"Database unavailable, retrying: {exc}")
                stop.sleep(interval)
            self.stdout.write(f"Stopped on {stop.signal_name}.")

    def deliver_once(self) -> None:
        while True:
            report = alerts_deliver_due()
            handled = report.delivered + report.retrying + report.failed
            if handled:
                self.stdout.write(
                    f"Alerts: {report.delivered} delivered, {report.retrying} "
                    f"will retry, {report.failed} failed for good."
                )
            if handled < 50:
                return
