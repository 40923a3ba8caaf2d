"""Installs budgets/sql/functions.sql (CREATE OR REPLACE) for the migrations
that change it. It reads the file as it is when the migration runs, so a fresh
database gets the newest functions from the first such migration on.
(Django's migration loader skips modules whose name starts with "_".)"""

from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parent.parent / "sql" / "functions.sql"


def install(apps, schema_editor):
    # An early migration installs today's text, whose SQL-language functions
    # may name tables that later migrations create: don't check bodies now
    # (as pg_dump does); they are checked when called.
    schema_editor.execute("SET LOCAL check_function_bodies = off")
    schema_editor.execute(FUNCTIONS.read_text())
