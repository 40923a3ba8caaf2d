"""Reinstall budgets/sql/functions.sql: tollgate_decide creates missing windows
in budget order, like the batched holds and tollgate_record_events."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0006_inline_pricing")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
