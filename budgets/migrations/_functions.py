"""Installs budgets/sql/functions.sql (CREATE OR REPLACE) for the migrations
that change it. It reads the file as it is when the migration runs, so a fresh
database gets the newest functions from the first such migration on.
(Django's migration loader skips modules whose name starts with "_".)"""

from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parent.parent / "sql" / "functions.sql"


def install(apps, schema_editor):
    schema_editor.execute(FUNCTIONS.read_text())
