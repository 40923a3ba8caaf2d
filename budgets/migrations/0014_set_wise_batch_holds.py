"""Reinstall budgets/sql/functions.sql: tollgate_decide_many decides a batch of
holds set-wise (windows locked and read once, one UPDATE, one INSERT) instead
of one tollgate_decide call per item."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0013_settle_rules")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
