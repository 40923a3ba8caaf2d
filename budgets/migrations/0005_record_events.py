"""Reinstall budgets/sql/functions.sql: event pricing and tollgate_record_events."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0004_batched_holds"),
        ("tracking", "0002_aggregationstate_hourlyrollup_requestevent"),
    ]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
