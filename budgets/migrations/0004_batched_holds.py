"""Reinstall budgets/sql/functions.sql: adds tollgate_decide_many (batched holds)."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0003_delete_budget_with_windows")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
