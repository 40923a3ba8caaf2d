"""Reinstall budgets/sql/functions.sql: tollgate_record_events answers its
transaction id and the dashboard statements their snapshots, so that a page
adds exactly the live updates its summary did not see."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0023_reservation_id_at")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
