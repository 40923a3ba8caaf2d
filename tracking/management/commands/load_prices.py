from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from budgets.audit import Actor
from tracking.services import DEFAULT_PRICE_FILE, prices_load


class Command(BaseCommand):
    help = (
        "Import model prices from a file in the format of LiteLLM's "
        "model_prices_and_context_window.json (default: the file shipped with Tollgate)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", nargs="?", default=str(DEFAULT_PRICE_FILE))

    def handle(self, *args, path: str, **options) -> None:
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
