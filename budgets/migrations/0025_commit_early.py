"""Reinstall budgets/sql/functions.sql: tollgate_commit_early, with which the
hot path's writes let go of their budget windows' locks before their WAL
flush and answer after it (HOTPATH_EARLY_LOCK_RELEASE)."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0024_live_update_snapshots")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
