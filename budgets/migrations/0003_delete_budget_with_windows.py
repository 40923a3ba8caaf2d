"""Reinstall budgets/sql/functions.sql: tollgate_delete_budget now deletes the
budget's windows first (deleting a budget that had been used failed on the
windows' foreign key)."""

from pathlib import Path

from django.db import migrations

FUNCTIONS = Path(__file__).resolve().parent.parent / "sql" / "functions.sql"


def install(apps, schema_editor):
    schema_editor.execute(FUNCTIONS.read_text())


class Migration(migrations.Migration):
    dependencies = [("budgets", "0002_hot_path_functions")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
