"""Reinstall budgets/sql/functions.sql: an event settles only a hold of its own
team (or a teamless one); replays report the hold's state."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0012_lean_holds")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
