from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.management.stopping import StopRequest
from tracking.management import arguments
from tracking.services import (
    PRUNE_BATCH_SIZE,
    PrunePlan,
    RollupsBehind,
    events_prune,
    events_prune_plan,
)


class Command(BaseCommand):
    help = (
        "Delete raw request events that started more than --older-than ago (e.g. 90d, 36h; "
        "rounded down to a whole hour), in batches. The hourly rollups stay, so usage "
        "reports keep those hours. Refuses while the rollups miss any of those events: "
        "run aggregate_usage first."
    )

    progress_every = 2.0

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=arguments.age,
            required=True,
            help="Age of the events to delete by start time: Nd (days) or Nh (hours).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Only count what would be deleted."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=PRUNE_BATCH_SIZE,
            help=f"Events per transaction (default {PRUNE_BATCH_SIZE}).",
        )

    def handle(
        self, *args, older_than: timedelta, dry_run: bool, batch_size: int, **options
    ) -> None:
        if batch_size <= 0:
            raise CommandError("--batch-size must be above zero.")
        plan = events_prune_plan(older_than=older_than)
        cutoff = f"{plan.cutoff:%Y-%m-%d %H:%M}Z"
        if dry_run:
            self.stdout.write(f"Would delete {plan.total} events that started before {cutoff}.")
            if plan.not_rolled_up:
                self.stdout.write(self.refusal(plan.not_rolled_up))
            return
        if plan.total == 0:
            self.stdout.write(f"No events started before {cutoff}; nothing to delete.")
            return
        self.stdout.write(f"Deleting {plan.total} events that started before {cutoff} ...")
        self.stdout.flush()
        deleted, stopped_by = self.prune(plan, batch_size)
        if stopped_by:
            self.stdout.write(
                f"Stopped on {stopped_by}: deleted {deleted} of {plan.total} events. "
                "Run the same command again to delete the rest."
            )
        else:
            self.stdout.write(f"Deleted {deleted} events; the hourly rollups keep their usage.")

    def prune(self, plan: PrunePlan, batch_size: int) -> tuple[int, str | None]:
        self._started = self._last_progress = time.monotonic()
        with StopRequest() as stop:
            try:
                deleted = events_prune(
                    plan=plan,
                    batch_size=batch_size,
                    progress=self.progress,
                    should_stop=lambda: stop.requested,
                )
            except RollupsBehind as exc:
                raise CommandError(self.refusal(exc.events)) from None
        return deleted, stop.signal_name

    def refusal(self, events: int) -> str:
        return (
            f"{events} of these events are not in the hourly rollups yet; deleting them would "
            "lose them from every report. Run `python3 manage.py aggregate_usage` first "
            "(events received in the second before it runs, or by a transaction still running, "
            f"count only on a later run; at most {settings.AGGREGATION_LAG_SECONDS} s later)."
        )

    def progress(self, done: int, total: int, events: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last_progress < self.progress_every:
            return
        self._last_progress = now
        rate = done / max(now - self._started, 1e-6)
        self.stdout.write(f"  {done}/{total} events deleted, {rate:.0f} events/s")
        self.stdout.flush()
