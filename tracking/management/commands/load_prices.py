from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from budgets.audit import Actor
from config.hotpath.inputs import usd_text
from tracking import selectors
from tracking.services import DEFAULT_PRICE_FILE, prices_load

CHECK_DAYS = 30


class Command(BaseCommand):
    help = (
        "Import model prices from a file in the format of LiteLLM's "
        "model_prices_and_context_window.json (default: the file shipped with Tollgate). "
        f"With --check, load nothing: list the models seen in the last {CHECK_DAYS} days "
        "that have no price, and which price map is in force."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", nargs="?", default=str(DEFAULT_PRICE_FILE))
        parser.add_argument(
            "--check",
            action="store_true",
            help=f"List models of the last {CHECK_DAYS} days with no price; exit 1 if any.",
        )

    def handle(self, *args, path: str, check: bool = False, **options) -> None:
        if check:
            self.check_prices()
            return
        file = Path(path)
        if not file.is_file():
            raise CommandError(f"No such file: {file}")
        try:
            report = prices_load(path=file, actor=Actor.command("load_prices"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CommandError(f"{file} is not a JSON price map: {exc}") from exc
        skipped = sum(report.skipped_modes.values())
        modes = ", ".join(f"{mode} {n}" for mode, n in sorted(report.skipped_modes.items()))
        self.stdout.write(
            f"Prices from {file.name}: {len(report.added)} added, {len(report.changed)} changed, "
            f"{report.unchanged} unchanged, {skipped} skipped "
            f"(not priced per token{': ' + modes if modes else ''})."
        )
        for model in report.changed:
            self.stdout.write(f"  changed: {model}")

    def check_prices(self) -> None:
        prices = selectors.prices_in_force()
        if prices.loaded_at is None:
            self.stdout.write(
                f"Price map: none loaded by load_prices; {prices.models} models priced."
            )
        else:
            self.stdout.write(
                f"Price map: {prices.file}, loaded {prices.loaded_at:%Y-%m-%d %H:%M} UTC; "
                f"{prices.models} models priced; newest price in effect since "
                f"{prices.newest_change:%Y-%m-%d %H:%M} UTC."
            )
        since = timezone.now() - timedelta(days=CHECK_DAYS)
        rows = selectors.run("unpriced_models", {"since": since})
        if not rows:
            self.stdout.write(f"Every model seen in the last {CHECK_DAYS} days has a price.")
            return
        self.stdout.write(f"Models seen in the last {CHECK_DAYS} days with no price:")
        for model, events, charged, last_seen in rows:
            self.stdout.write(
                f"  {model}: {events} events, charged ${usd_text(charged)} "
                f"(unpriced policy), last {last_seen:%Y-%m-%d %H:%M} UTC"
            )
        raise CommandError(
            f"{len(rows)} model(s) without a price: add them to the price map or as "
            "model aliases, then run reprice."
        )
