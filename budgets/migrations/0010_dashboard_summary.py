"""Reinstall budgets/sql/functions.sql: tollgate_dashboard_summary (GET
/v1/dashboard/summary) and its tollgate_iso helper."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0009_alerts_only_near_limits")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
