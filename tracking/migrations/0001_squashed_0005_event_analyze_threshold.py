"""The tracking schema, squashed from 0001-0005 (see budgets 0001)."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("tracking", "0001_initial"),
        ("tracking", "0002_aggregationstate_hourlyrollup_requestevent"),
        ("tracking", "0003_usage_indexes"),
        ("tracking", "0004_daily_rollups"),
        ("tracking", "0005_event_analyze_threshold"),
    ]

    dependencies = [
        ("budgets", "0001_squashed_0024_live_update_snapshots"),
    ]

    operations = [
        migrations.CreateModel(
            name="AggregationState",
            fields=[
                ("name", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("watermark", models.DateTimeField()),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
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
            name="Price",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("provider", models.CharField(max_length=64)),
                ("model", models.CharField(max_length=128)),
                ("effective_from", models.DateTimeField(default=django.utils.timezone.now)),
                ("input_per_token", models.DecimalField(decimal_places=14, max_digits=20)),
                ("output_per_token", models.DecimalField(decimal_places=14, max_digits=20)),
                (
                    "cache_read_per_token",
                    models.DecimalField(blank=True, decimal_places=14, max_digits=20, null=True),
                ),
                (
                    "cache_write_per_token",
                    models.DecimalField(blank=True, decimal_places=14, max_digits=20, null=True),
                ),
                (
                    "reasoning_per_token",
                    models.DecimalField(blank=True, decimal_places=14, max_digits=20, null=True),
                ),
                ("tier_threshold_tokens", models.PositiveIntegerField(blank=True, null=True)),
                (
                    "input_above_threshold_per_token",
                    models.DecimalField(blank=True, decimal_places=14, max_digits=20, null=True),
                ),
                (
                    "output_above_threshold_per_token",
                    models.DecimalField(blank=True, decimal_places=14, max_digits=20, null=True),
                ),
            ],
            options={
                "ordering": ["provider", "model", "-effective_from"],
                "indexes": [
                    models.Index(fields=["model", "-effective_from"], name="price_model_latest")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("provider", "model", "effective_from"),
                        name="price_unique_effective",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("input_per_token__gte", 0), ("output_per_token__gte", 0)
                        ),
                        name="price_non_negative",
                    ),
                ],
            },
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
        migrations.CreateModel(
            name="HourlyRollup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("model", models.CharField(max_length=128)),
                ("hour", models.DateTimeField()),
                ("requests", models.BigIntegerField(default=0)),
                ("errors", models.BigIntegerField(default=0)),
                ("unpriced_requests", models.BigIntegerField(default=0)),
                ("input_tokens", models.BigIntegerField(default=0)),
                ("cache_read_tokens", models.BigIntegerField(default=0)),
                ("cache_write_tokens", models.BigIntegerField(default=0)),
                ("output_tokens", models.BigIntegerField(default=0)),
                ("reasoning_tokens", models.BigIntegerField(default=0)),
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
                "ordering": ["-hour"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("org", "hour", "team", "user", "model"),
                        name="rollup_unique_bucket",
                        nulls_distinct=False,
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="RequestEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("event_id", models.CharField(max_length=128)),
                ("model", models.CharField(max_length=128)),
                ("provider", models.CharField(blank=True, max_length=64)),
                ("started_at", models.DateTimeField()),
                ("received_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "input_tokens",
                    models.BigIntegerField(default=0, help_text="Uncached input tokens."),
                ),
                ("cache_read_tokens", models.BigIntegerField(default=0)),
                ("cache_write_tokens", models.BigIntegerField(default=0)),
                (
                    "output_tokens",
                    models.BigIntegerField(
                        default=0, help_text="Output tokens, reasoning excluded."
                    ),
                ),
                ("reasoning_tokens", models.BigIntegerField(default=0)),
                ("cost_usd", models.DecimalField(decimal_places=10, max_digits=20)),
                (
                    "priced",
                    models.BooleanField(
                        help_text="False: no price was known (cost 0 until repriced)."
                    ),
                ),
                ("latency_ms", models.IntegerField(blank=True, null=True)),
                (
                    "status",
                    models.CharField(
                        choices=[("ok", "Ok"), ("error", "Error")], default="ok", max_length=5
                    ),
                ),
                ("reservation_id", models.UUIDField(blank=True, null=True)),
                ("tags", models.JSONField(blank=True, default=dict)),
                ("payload_hash", models.CharField(max_length=64)),
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
                        on_delete=django.db.models.deletion.SET_NULL,
                        to="budgets.team",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        to="budgets.enduser",
                    ),
                ),
            ],
            options={
                "ordering": ["-started_at"],
                "indexes": [
                    models.Index(fields=["org", "-started_at"], name="event_org_started"),
                    models.Index(fields=["received_at"], name="event_received"),
                    models.Index(fields=["org", "received_at"], name="event_org_received"),
                    models.Index(
                        condition=models.Q(("priced", False)),
                        fields=["started_at"],
                        name="event_unpriced",
                    ),
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("org", "event_id"), name="event_unique_id"),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("cache_read_tokens__gte", 0),
                            ("cache_write_tokens__gte", 0),
                            ("cost_usd__gte", 0),
                            ("input_tokens__gte", 0),
                            ("output_tokens__gte", 0),
                            ("reasoning_tokens__gte", 0),
                        ),
                        name="event_non_negative",
                    ),
                ],
            },
        ),
        # Re-analyze every 20,000 changed rows, not every 10% of the table:
        # an org newer than the statistics looks empty to the planner, and
        # this table only grows.
        migrations.RunSQL(
            "ALTER TABLE tracking_requestevent SET (autovacuum_analyze_scale_factor = 0, "
            "autovacuum_analyze_threshold = 20000)",
            "ALTER TABLE tracking_requestevent RESET (autovacuum_analyze_scale_factor, "
            "autovacuum_analyze_threshold)",
        ),
    ]
