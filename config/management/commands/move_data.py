from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.move import BATCH_ROWS, MoveError, move_data


class Command(BaseCommand):
    help = (
        "Copy every table of this database (DATABASE_URL, or the embedded one) to a "
        "server PostgreSQL: migrate it, copy in foreign-key order (re-runnable: rows "
        "already there are kept), then compare row counts and SHA-256 digests per "
        "table. The source is only read. Exits non-zero on any difference."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--to",
            required=True,
            metavar="postgresql://USER:PASSWORD@HOST:PORT/DB",
            help="The target database (created beforehand, may be empty).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Report per table what the source and target hold; write nothing.",
        )
        parser.add_argument(
            "--batch-size", type=int, default=BATCH_ROWS, help="Rows per insert batch."
        )

    def handle(self, *args, to: str, dry_run: bool, batch_size: int, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            report = move_data(
                target_url=to, dry_run=dry_run, batch_rows=batch_size, out=self.stdout.write
            )
        except MoveError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("")
        for line in report.lines():
            self.stdout.write(line)
        if report.mismatches and not dry_run:
            names = ", ".join(t.name for t in report.mismatches)
            raise CommandError(
                f"The target differs from the source in: {names}. It held other rows under "
                "the same keys (rows already on the target are never overwritten) or rows "
                "the source does not have. Move into a new, empty database."
            )
