"""Reinstall budgets/sql/functions.sql: reservation ids are UUID version 7
(time first), so a release can tell a hold that RESERVATION_RETENTION_DAYS
deleted (200, status "closed") from an id never given out (404), and new holds
go to the end of the primary key's index instead of a random page of it."""

from django.db import migrations

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [("budgets", "0021_reservation_closed")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
