"""Reinstall budgets/sql/functions.sql: the dashboard breakdown ranks the
chart's keys with window functions instead of joining back on the key with
IS NOT DISTINCT FROM, which could not hash: on the load org (100 teams) the
24h breakdown took 40.0 instead of 44.5 ms (medians of 16 alternating calls),
with identical answers."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0019_period_bounds_inlined")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
