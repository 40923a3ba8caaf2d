"""Reinstall budgets/sql/functions.sql: tollgate_new_reservation_id takes the
time to put in the id (default now()), so the id's layout is written once."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0022_time_ordered_reservation_ids")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
