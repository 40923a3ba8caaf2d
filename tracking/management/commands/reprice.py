from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.hotpath.inputs import usd_text
from config.management.stopping import StopRequest
from tracking.management import arguments
from tracking.services import REPRICE_BATCH_SIZE, RepriceReport, events_reprice


class Command(BaseCommand):
    help = (
        "Recompute the cost of unpriced events (with --all: of every event) that started "
        "since --since, at the price in effect when each started. Moves the difference "
        "into the budget windows the events count in and refreshes their hourly rollups, "
        "one transaction per batch, and prints what changed."
    )

    progress_every = 2.0

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            type=arguments.moment,
            required=True,
            help="Events that started at or after this date or ISO-8601 date-time (UTC).",
        )
        parser.add_argument(
            "--until", type=arguments.moment, help="... and before this one (default: no end)."
        )
        parser.add_argument("--model", help="Only events of this model.")
        parser.add_argument(
            "--all",
            action="store_true",
            dest="all_events",
            help="Reprice priced events too (e.g. after a price correction), not only unpriced ones.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=REPRICE_BATCH_SIZE,
            help=f"Events per transaction (default {REPRICE_BATCH_SIZE}).",
        )

    def handle(
        self,
        *args,
        since: datetime,
        until: datetime | None,
        model: str | None,
        all_events: bool,
        batch_size: int,
        **options,
    ) -> None:
        if until is not None and until <= since:
            raise CommandError("--until must be after --since.")
        if batch_size <= 0:
            raise CommandError("--batch-size must be above zero.")
        self._started = self._last_progress = time.monotonic()
        with StopRequest() as stop:
            report = events_reprice(
                since=since,
                until=until,
                model=model,
                all_events=all_events,
                batch_size=batch_size,
                progress=self.progress,
                should_stop=lambda: stop.requested,
            )
        self.summary(report)
        if stop.requested:
            self.stdout.write(
                f"Stopped on {stop.signal_name} after a complete batch; "
                "run the same command again to carry on."
            )

    def summary(self, report: RepriceReport) -> None:
        which = "events" if report.repriced != 1 else "event"
        self.stdout.write(f"Repriced {report.repriced} {which}; total change {_usd(report.delta)}.")
        for model, part in sorted(report.by_model.items()):
            self.stdout.write(f"  {model}: {part.events} events, {_usd(part.delta)}")
        if report.repriced:
            self.stdout.write(
                f"Budget windows adjusted: {report.windows_adjusted} "
                f"({report.windows_created} created); rollup hours refreshed: "
                f"{report.rollup_hours}."
            )
        if report.unchanged:
            self.stdout.write(f"Unchanged (already at that price): {report.unchanged} events.")
        for model, n in sorted(report.no_price.items()):
            self.stdout.write(
                self.style.WARNING(f"  {model}: {n} events still have no price (load_prices?)")
            )

    def progress(self, report: RepriceReport) -> None:
        now = time.monotonic()
        if now - self._last_progress < self.progress_every:
            return
        self._last_progress = now
        seen = report.repriced + report.unchanged + sum(report.no_price.values())
        rate = seen / max(now - self._started, 1e-6)
        self.stdout.write(f"  {seen} events seen, {report.repriced} repriced, {rate:.0f} events/s")
        self.stdout.flush()


def _usd(amount: Decimal) -> str:
    """A signed dollar amount: +$0.0123, -$2, $0."""
    sign = "+" if amount > 0 else "-" if amount < 0 else ""
    return f"{sign}${usd_text(abs(amount))}"
