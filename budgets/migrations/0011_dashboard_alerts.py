"""Reinstall budgets/sql/functions.sql: the dashboard summary lists open alerts."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0010_dashboard_summary")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
