"""Daily rollups in the org's local days, and the dashboard functions that read
them (reinstalls budgets/sql/functions.sql). The table starts empty: the
dashboard sums hourly rollups for an org until aggregate_usage has built its
days (DailyRollupZone)."""

import django.db.models.deletion
from django.db import migrations, models

from budgets.migrations._functions import install


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0013_settle_rules"),
        ("tracking", "0003_usage_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="DailyRollupZone",
            fields=[
                (
                    "org",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="budgets.organization",
                    ),
                ),
                ("time_zone", models.CharField(max_length=64)),
                ("built_at", models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.CreateModel(
            name="DailyRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("model", models.CharField(max_length=128)),
                (
                    "day",
                    models.DateTimeField(
                        help_text="Start of the local day (local midnight, as an instant)."
                    ),
                ),
                ("requests", models.BigIntegerField(default=0)),
                ("errors", models.BigIntegerField(default=0)),
                ("unpriced_requests", models.BigIntegerField(default=0)),
                ("cost_usd", models.DecimalField(decimal_places=10, default=0, max_digits=20)),
                (
                    "org",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="budgets.organization",
                    ),
                ),
                (
                    "team",
                    models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="budgets.team",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="budgets.enduser",
                    ),
                ),
            ],
            options={
                "ordering": ["-day"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("org", "day", "team", "user", "model"),
                        name="daily_rollup_unique_bucket",
                        nulls_distinct=False,
                    )
                ],
            },
        ),
        migrations.RunPython(install, migrations.RunPython.noop),
    ]
