"""Reinstall budgets/sql/functions.sql: pricing as inlinable SQL, one pass
over the budget windows per ingest batch."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0005_record_events")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
