"""Reinstall budgets/sql/functions.sql: tollgate_release and the settling
step of tollgate_record_events lock and read a hold by its primary key and
check its status on what they read. With `status = 'active'` in their
conditions, stale statistics of the partial index of active holds made
PostgreSQL read every active hold for each release and each event batch."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0017_rollups_up_to_watermark")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
