"""Installs budgets/sql/functions.sql (CREATE OR REPLACE) for the migrations
that change it. It reads the file as it is when the migration runs, so a fresh
database gets the newest functions from the first such migration on.
(Django's migration loader skips modules whose name starts with "_".)"""

from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parent.parent / "sql" / "functions.sql"


def install(apps, schema_editor):
    # On a fresh database the first of these migrations installs the newest
    # file, whose SQL functions may read tables that later migrations create:
    # their bodies are checked when they are called instead (as pg_dump does).
    schema_editor.execute("SET LOCAL check_function_bodies = off")
    schema_editor.execute(FUNCTIONS.read_text())
