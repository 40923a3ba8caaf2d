"""Reinstall budgets/sql/functions.sql: tollgate_delete_budget now deletes the
budget's windows first (deleting a budget that had been used failed on the
windows' foreign key)."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0002_hot_path_functions")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
