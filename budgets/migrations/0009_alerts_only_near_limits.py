"""Reinstall budgets/sql/functions.sql: a hold looks for alerts only when a
window is at or past its soft limit."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0008_alerts")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
