"""Reinstall budgets/sql/functions.sql: tollgate_period_bounds returns a
table (one row), so that PostgreSQL inlines it where the hot path calls it in
FROM; with OUT parameters it ran as a function call per budget of every hold
and event."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0018_holds_by_primary_key")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
