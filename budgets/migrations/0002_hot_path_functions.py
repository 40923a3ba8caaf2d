"""Install the hot path's server-side functions (budgets/sql/functions.sql).

The file is read when the migration runs, so the migration always installs the
current text; every change to functions.sql ships with a new migration that
runs it again (CREATE OR REPLACE)."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0001_initial"),
        ("tracking", "0001_initial"),
    ]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
