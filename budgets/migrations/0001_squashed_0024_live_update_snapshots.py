"""The budgets schema, squashed from 0001-0024. The SQL functions are not
installed by migrations: config/sqlfunctions.py installs them after every
migrate. No migration imports app code."""

import uuid
from decimal import Decimal

import django.contrib.postgres.fields
import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("budgets", "0001_initial"),
        ("budgets", "0002_hot_path_functions"),
        ("budgets", "0003_delete_budget_with_windows"),
        ("budgets", "0004_batched_holds"),
        ("budgets", "0005_record_events"),
        ("budgets", "0006_inline_pricing"),
        ("budgets", "0007_decide_window_order"),
        ("budgets", "0008_alerts"),
        ("budgets", "0009_alerts_only_near_limits"),
        ("budgets", "0010_dashboard_summary"),
        ("budgets", "0011_dashboard_alerts"),
        ("budgets", "0012_lean_holds"),
        ("budgets", "0013_settle_rules"),
        ("budgets", "0014_set_wise_batch_holds"),
        ("budgets", "0015_record_events_reads"),
        ("budgets", "0016_reservation_analyze_threshold"),
        ("budgets", "0017_rollups_up_to_watermark"),
        ("budgets", "0018_holds_by_primary_key"),
        ("budgets", "0019_period_bounds_inlined"),
        ("budgets", "0020_chart_keys_ranked_by_window"),
        ("budgets", "0021_reservation_closed"),
        ("budgets", "0022_time_ordered_reservation_ids"),
        ("budgets", "0023_reservation_id_at"),
        ("budgets", "0024_live_update_snapshots"),
    ]

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Alert",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[("soft", "Soft limit reached"), ("hard", "Hard limit reached")],
                        max_length=4,
                    ),
                ),
                ("limit_usd", models.DecimalField(decimal_places=10, max_digits=20)),
                (
                    "used_usd",
                    models.DecimalField(
                        decimal_places=10,
                        help_text="spent + reserved when it crossed.",
                        max_digits=20,
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("acknowledged_at", models.DateTimeField(blank=True, null=True)),
                (
                    "delivery_status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("delivered", "Delivered"),
                            ("failed", "Failed (gave up)"),
                            ("skipped", "Skipped (no webhook)"),
                        ],
                        default="pending",
                        max_length=9,
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("next_attempt_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("delivered_at", models.DateTimeField(blank=True, null=True)),
                ("last_error", models.TextField(blank=True)),
            ],
            options={
                "ordering": ["-created_at"],
            },
        ),
        migrations.CreateModel(
            name="Budget",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "scope",
                    models.CharField(
                        choices=[("org", "Org"), ("team", "Team"), ("user", "User")], max_length=4
                    ),
                ),
                (
                    "period",
                    models.CharField(
                        choices=[
                            ("day", "Day"),
                            ("week", "Week"),
                            ("month", "Month"),
                            ("total", "Total"),
                        ],
                        max_length=5,
                    ),
                ),
                ("limit_usd", models.DecimalField(decimal_places=10, max_digits=20)),
                ("soft_limit_pct", models.PositiveSmallIntegerField(default=80)),
                (
                    "enforce",
                    models.BooleanField(
                        default=True, help_text="Deny at the limit; off = monitor only."
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["org", "scope", "period"],
            },
        ),
        migrations.CreateModel(
            name="EndUser",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("external_id", models.CharField(max_length=128)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "ordering": ["org", "external_id"],
            },
        ),
        migrations.CreateModel(
            name="Organization",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("slug", models.SlugField(max_length=64, unique=True)),
                ("name", models.CharField(blank=True, max_length=200)),
                (
                    "time_zone",
                    models.CharField(default="UTC", max_length=64),
                ),
                (
                    "strict",
                    models.BooleanField(
                        default=False,
                        help_text="Reject unknown teams and users (404) instead of registering them.",
                    ),
                ),
                (
                    "fail_mode",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("", "Use the server default (BUDGET_FAIL_MODE)"),
                            ("open", "Open: allow, marked degraded"),
                            ("closed", "Closed: deny with 503"),
                        ],
                        default="",
                        max_length=6,
                    ),
                ),
                (
                    "webhook_url",
                    models.URLField(
                        blank=True,
                        help_text="Budget alerts are POSTed here as JSON (with a Slack-style 'text').",
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "ordering": ["slug"],
            },
        ),
        migrations.CreateModel(
            name="AlertDeliveryAttempt",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("attempted_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("status_code", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("error", models.TextField(blank=True)),
                ("duration_ms", models.PositiveIntegerField(default=0)),
                (
                    "alert",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="delivery_attempts",
                        to="budgets.alert",
                    ),
                ),
            ],
            options={
                "ordering": ["-attempted_at"],
            },
        ),
        migrations.AddField(
            model_name="alert",
            name="budget",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="alerts",
                to="budgets.budget",
            ),
        ),
        migrations.CreateModel(
            name="BudgetWindow",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("period_start", models.DateTimeField()),
                ("period_end", models.DateTimeField()),
                (
                    "spent",
                    models.DecimalField(decimal_places=10, default=Decimal("0"), max_digits=20),
                ),
                (
                    "reserved",
                    models.DecimalField(decimal_places=10, default=Decimal("0"), max_digits=20),
                ),
                (
                    "budget",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="windows",
                        to="budgets.budget",
                    ),
                ),
            ],
            options={
                "ordering": ["budget", "-period_start"],
            },
        ),
        migrations.AddField(
            model_name="alert",
            name="window",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="alerts",
                to="budgets.budgetwindow",
            ),
        ),
        migrations.AddField(
            model_name="budget",
            name="user",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                to="budgets.enduser",
            ),
        ),
        migrations.AddField(
            model_name="enduser",
            name="org",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="end_users",
                to="budgets.organization",
            ),
        ),
        migrations.AddField(
            model_name="budget",
            name="org",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="budgets",
                to="budgets.organization",
            ),
        ),
        migrations.AddField(
            model_name="alert",
            name="org",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="alerts",
                to="budgets.organization",
            ),
        ),
        migrations.CreateModel(
            name="Team",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("slug", models.CharField(max_length=128)),
                ("name", models.CharField(blank=True, max_length=200)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "org",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="teams",
                        to="budgets.organization",
                    ),
                ),
            ],
            options={
                "ordering": ["org", "slug"],
            },
        ),
        migrations.CreateModel(
            name="Reservation",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("amount", models.DecimalField(decimal_places=10, max_digits=20)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("active", "Active"),
                            ("released", "Released"),
                            ("settled", "Settled"),
                            ("expired", "Expired"),
                        ],
                        default="active",
                        max_length=8,
                    ),
                ),
                (
                    "window_ids",
                    django.contrib.postgres.fields.ArrayField(
                        base_field=models.BigIntegerField(), default=list, size=None
                    ),
                ),
                ("model", models.CharField(blank=True, max_length=128)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("expires_at", models.DateTimeField()),
                ("closed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "org",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="reservations",
                        to="budgets.organization",
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
            ],
            options={
                "ordering": ["-created_at"],
            },
        ),
        migrations.AddField(
            model_name="budget",
            name="team",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                to="budgets.team",
            ),
        ),
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(blank=True, max_length=200)),
                ("lookup_id", models.CharField(editable=False, max_length=16, unique=True)),
                ("key_hash", models.CharField(editable=False, max_length=64)),
                (
                    "is_admin",
                    models.BooleanField(
                        default=False, help_text="May manage budgets through the API."
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
                ("last_used_at", models.DateTimeField(blank=True, null=True)),
                (
                    "org",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_keys",
                        to="budgets.organization",
                    ),
                ),
                (
                    "team",
                    models.ForeignKey(
                        blank=True,
                        help_text="Limit the key to one team.",
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="budgets.team",
                    ),
                ),
            ],
            options={
                "verbose_name": "API key",
                "ordering": ["org", "-created_at"],
            },
        ),
        migrations.AddConstraint(
            model_name="budgetwindow",
            constraint=models.UniqueConstraint(
                fields=("budget", "period_start"), name="window_unique_period"
            ),
        ),
        migrations.AddConstraint(
            model_name="budgetwindow",
            constraint=models.CheckConstraint(
                condition=models.Q(("spent__gte", 0)), name="window_spent_non_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="budgetwindow",
            constraint=models.CheckConstraint(
                condition=models.Q(("reserved__gte", 0)), name="window_reserved_non_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="enduser",
            constraint=models.UniqueConstraint(
                fields=("org", "external_id"), name="enduser_unique_external_id"
            ),
        ),
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(
                condition=models.Q(("delivery_status", "pending")),
                fields=["next_attempt_at"],
                name="alert_due",
            ),
        ),
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(
                condition=models.Q(("acknowledged_at__isnull", True)),
                fields=["org", "-created_at"],
                name="alert_open",
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.UniqueConstraint(
                fields=("window", "kind"), name="alert_once_per_window_kind"
            ),
        ),
        migrations.AddConstraint(
            model_name="team",
            constraint=models.UniqueConstraint(fields=("org", "slug"), name="team_unique_slug"),
        ),
        migrations.AddIndex(
            model_name="reservation",
            index=models.Index(
                condition=models.Q(("status", "active")),
                fields=["expires_at"],
                name="reservation_active_expiry",
            ),
        ),
        migrations.AddIndex(
            model_name="reservation",
            index=models.Index(
                condition=models.Q(("status", "active"), _negated=True),
                fields=["closed_at"],
                name="reservation_closed",
            ),
        ),
        migrations.AddConstraint(
            model_name="reservation",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount__gte", 0)), name="reservation_amount_non_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.CheckConstraint(
                condition=models.Q(("limit_usd__gte", 0)), name="budget_limit_non_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.CheckConstraint(
                condition=models.Q(("soft_limit_pct__gte", 0), ("soft_limit_pct__lte", 100)),
                name="budget_soft_limit_pct_range",
            ),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("scope", "org"), ("team__isnull", True), ("user__isnull", True)),
                    models.Q(("scope", "team"), ("team__isnull", False), ("user__isnull", True)),
                    models.Q(("scope", "user"), ("team__isnull", True), ("user__isnull", False)),
                    _connector="OR",
                ),
                name="budget_scope_matches_subject",
            ),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.UniqueConstraint(
                fields=("org", "scope", "team", "user", "period"),
                name="budget_unique_scope_period",
                nulls_distinct=False,
            ),
        ),
        # Re-analyze every 20,000 changed rows, not every 10% of the table:
        # an org newer than the statistics looks empty to the planner, and
        # this table only grows.
        migrations.RunSQL(
            "ALTER TABLE budgets_reservation SET (autovacuum_analyze_scale_factor = 0, "
            "autovacuum_analyze_threshold = 20000)",
            "ALTER TABLE budgets_reservation RESET (autovacuum_analyze_scale_factor, "
            "autovacuum_analyze_threshold)",
        ),
    ]
