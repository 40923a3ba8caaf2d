"""SQL functions are code: every app's `sql/functions/*.sql` files, installed
after each `migrate` (post_migrate) in one transaction, in app order and then
file name order. A function no file defines any more is dropped, so the
database holds exactly what the files say (tests/test_sql_functions.py checks).

Migrations never install functions: they would run the text of the day they
run, against tables a later migration may not have created yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.apps import apps
from django.db import connections, transaction

PREFIX = "tollgate_"

# Every function of ours in the public schema, with the version of its row:
# CREATE OR REPLACE writes a new one, so a row unchanged by an install is a
# function that no file defines.
_OURS = """
SELECT p.oid::regprocedure::text, p.oid, p.xmin::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND p.proname LIKE %(prefix)s
"""


def function_files() -> list[Path]:
    """Every app's function files, in the order they are installed."""
    files: list[Path] = []
    for app in apps.get_app_configs():
        folder = Path(app.path) / "sql" / "functions"
        if folder.is_dir():
            files.extend(sorted(folder.glob("*.sql")))
    return files


def install(using: str = "default") -> list[str]:
    """Install every function file; returns the signatures of the functions
    dropped because no file defines them any more."""
    with transaction.atomic(using), connections[using].cursor() as cursor:
        cursor.execute(_OURS, {"prefix": PREFIX + "%"})
        before = {(oid, xmin) for _signature, oid, xmin in cursor.fetchall()}
        for path in function_files():
            cursor.execute(path.read_text())
        cursor.execute(_OURS, {"prefix": PREFIX + "%"})
        stale = [sig for sig, oid, xmin in cursor.fetchall() if (oid, xmin) in before]
        for signature in stale:
            cursor.execute(f"DROP FUNCTION {signature}")
    return stale


def install_after_migrate(
    sender: Any, using: str = "default", verbosity: int = 1, plan: Any = None, **kwargs: Any
) -> None:
    if plan is None:
        # `flush` (run after every transactional test) sends post_migrate too;
        # it changes no schema, and the functions are already there.
        return
    dropped = install(using)
    if verbosity >= 1:
        print(f"  Installed the SQL functions of {len(function_files())} files.")
        for signature in dropped:
            print(f"  Dropped {signature}: no file defines it any more.")


_DEFINITIONS = """
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       replace(pg_get_functiondef(p.oid), n.nspname || '.', '')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.proname LIKE %(prefix)s
"""


def differences(using: str = "default") -> list[str]:
    """How the database's functions differ from a fresh install of the files
    (empty: they are the same). The files are installed into a scratch schema
    in a transaction that is rolled back, so nothing changes."""
    params = {"prefix": PREFIX + "%"}
    with transaction.atomic(using), connections[using].cursor() as cursor:
        cursor.execute(_DEFINITIONS, {**params, "schema": "public"})
        installed = dict(cursor.fetchall())
        cursor.execute("CREATE SCHEMA tollgate_files")
        cursor.execute("SET LOCAL search_path = tollgate_files, public")
        for path in function_files():
            cursor.execute(path.read_text())
        cursor.execute(_DEFINITIONS, {**params, "schema": "tollgate_files"})
        files = dict(cursor.fetchall())
        transaction.set_rollback(True, using)
    found = [f"{name}: not in the database" for name in sorted(files.keys() - installed.keys())]
    found += [f"{name}: in no file" for name in sorted(installed.keys() - files.keys())]
    found += [
        f"{name}: differs from its file"
        for name in sorted(files.keys() & installed.keys())
        if files[name] != installed[name]
    ]
    return found
