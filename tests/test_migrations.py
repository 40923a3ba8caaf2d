"""The squashed migrations describe the models exactly, and import no app."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent


def test_models_need_no_new_migration(db):
    try:
        call_command("makemigrations", "--check", "--dry-run", verbosity=0)
    except SystemExit as exit_:
        pytest.fail(f"the models have changes with no migration (exit {exit_.code})")


def test_no_migration_imports_app_code():
    migrations = sorted(ROOT.glob("*/migrations/0*.py"))
    assert migrations
    for migration in migrations:
        text = migration.read_text()
        for app in ("budgets", "tracking", "dashboard", "config"):
            assert f"from {app}" not in text, migration
            assert f"import {app}" not in text, migration
