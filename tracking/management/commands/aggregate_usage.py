from __future__ import annotations

import time
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import InterfaceError, OperationalError, connection

from config.management.stopping import StopRequest
from tracking import selectors
from tracking.management import arguments
from tracking.services import RefreshReport, rollups_refresh


class Command(BaseCommand):
    help = (
        "Roll raw request events up into hourly usage per (org, team, user, model), and "
        "that into daily usage in each org's local days. "
        "Incremental: adds the events received since the last run, up to just before the "
        "oldest transaction still running (it may yet commit events), and at most "
        "AGGREGATION_LAG_SECONDS behind, in one transaction. Idempotent. --rebuild --since "
        "DATE recomputes every hour from DATE on from its raw events (which also repairs "
        "rollups changed by hand); --follow keeps running (SIGTERM or Ctrl-C: finish the "
        "current pass, then exit)."
    )

    # Seconds between two progress lines of a long pass.
    progress_every = 2.0

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rebuild",
            action="store_true",
            help=(
                "Recompute every hour from --since on, not only the changed ones, and "
                "every org's local days."
            ),
        )
        parser.add_argument(
            "--since",
            type=arguments.moment,
            help="With --rebuild: first hour to recompute (date or ISO-8601 date-time, UTC).",
        )
        parser.add_argument(
            "--follow", action="store_true", help="Run a pass every --interval seconds."
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=60.0,
            help="With --follow: seconds between passes (default 60).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=50,
            help="With --rebuild: hours per transaction (default 50).",
        )

    def handle(
        self,
        *args,
        rebuild: bool,
        since: datetime | None,
        follow: bool,
        interval: float,
        batch_size: int,
        **options,
    ) -> None:
        if rebuild != (since is not None):
            raise CommandError("--rebuild and --since go together: --rebuild --since 2026-11-01.")
        if rebuild and follow:
            raise CommandError("--rebuild runs once; start --follow afterwards.")
        if interval <= 0 or batch_size <= 0:
            raise CommandError("--interval and --batch-size must be above zero.")
        self.batch_size = batch_size
        if follow:
            self.follow(interval)
        else:
            self.run_pass(since=since)

    def run_pass(self, *, since: datetime | None = None) -> RefreshReport:
        """One pass (a rebuild from `since` when given), with progress lines."""
        self._started = self._last_progress = time.monotonic()
        if since is not None:
            self.note_pruned_hours(since)
        report = rollups_refresh(since=since, batch_size=self.batch_size, progress=self.progress)
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self.stdout.write(
            f"{'Rebuilt' if since else 'Aggregated'} {report.buckets} hours "
            f"({report.events} events, {report.events / elapsed:.0f} events/s): "
            f"{report.written} rollup rows written, {report.removed} removed; "
            f"{report.days} local days updated."
        )
        if report.day_builds:
            self.stdout.write(
                f"Built the daily rollups of {report.day_builds} organization(s) in their "
                "time zone."
            )
        if report.tag_builds:
            self.stdout.write(
                f"Built or dropped the tag rollups of {report.tag_builds} reported tag name(s)."
            )
        if report.watermark is not None:
            self.stdout.write(
                f"Events received up to {report.watermark:%Y-%m-%d %H:%M:%S}Z are in."
            )
        if report.skipped_events:
            self.stdout.write(
                self.style.WARNING(
                    f"{report.skipped_events} late events started in hours that were already "
                    "pruned; they are not in the rollups (those hours' other events are gone)."
                )
            )
        return report

    def note_pruned_hours(self, since: datetime) -> None:
        pruned_before = selectors.job_watermark(selectors.PRUNE_JOB)
        if pruned_before is not None and since < pruned_before:
            self.stdout.write(
                f"Raw events before {pruned_before:%Y-%m-%d %H:%M}Z were pruned: those hours "
                "keep their rollups; rebuilding from there."
            )

    def progress(self, done: int, total: int, events: int) -> None:
        now = time.monotonic()
        # The summary line reports the end; these are for long passes.
        if done >= total or now - self._last_progress < self.progress_every:
            return
        self._last_progress = now
        rate = events / max(now - self._started, 1e-6)
        self.stdout.write(f"  {done}/{total} hours, {events} events, {rate:.0f} events/s")
        self.stdout.flush()

    def follow(self, interval: float) -> None:
        """Run passes until SIGTERM or SIGINT; the pass under way finishes first."""
        self.stdout.write(f"Aggregating every {interval:g} s; SIGTERM or Ctrl-C stops.")
        self.stdout.flush()
        with StopRequest() as stop:
            while not stop.requested:
                try:
                    self.run_pass()
                except (OperationalError, InterfaceError) as exc:
                    # The database restarted or is unreachable: a pass is
                    # idempotent and the watermark did not move, so the next
                    # one simply does this one's work too.
                    connection.close()
                    self.stderr.write(f"Pass failed ({exc}); retrying in {interval:g} s.")
                self.stdout.flush()
                stop.sleep(interval)
            self.stdout.write(f"Stopped on {stop.signal_name}; the last pass completed.")
            self.stdout.flush()
