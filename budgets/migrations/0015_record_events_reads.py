"""Reinstall budgets/sql/functions.sql: tollgate_record_events answers new
events from its INSERT's RETURNING and reads stored events back only for
replays, and reads reservations by id. Its cached generic plan had joined the
input to the org's whole event table (~35 ms of CPU for one event)."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0014_set_wise_batch_holds")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
