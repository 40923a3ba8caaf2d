"""The audit log (budgets.AuditEntry), append-only in the database: a trigger
refuses UPDATE and DELETE of its rows, whoever sends them. TRUNCATE (the
table owner's, as the tests' flush does) is not a row change and stays
possible. The trigger's function is not named tollgate_*: those are installed
out of the apps' sql/functions/ folders after migrate, and one that no file defines is
dropped."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

APPEND_ONLY = """
CREATE FUNCTION budgets_auditentry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER auditentry_append_only BEFORE UPDATE OR DELETE ON budgets_auditentry
    FOR EACH ROW EXECUTE FUNCTION budgets_auditentry_append_only();
"""

DROP_APPEND_ONLY = """
DROP TRIGGER IF EXISTS auditentry_append_only ON budgets_auditentry;
DROP FUNCTION IF EXISTS budgets_auditentry_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0002_max_request_usd"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditEntry",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "actor_kind",
                    models.CharField(
                        choices=[
                            ("key", "API key"),
                            ("user", "Login"),
                            ("command", "Management command"),
                            ("system", "System"),
                        ],
                        max_length=7,
                    ),
                ),
                ("actor_key_id", models.BigIntegerField(blank=True, null=True)),
                ("actor_user_id", models.BigIntegerField(blank=True, null=True)),
                ("actor_label", models.CharField(blank=True, max_length=200)),
                ("object_type", models.CharField(max_length=32)),
                ("object_id", models.CharField(max_length=400)),
                ("action", models.CharField(max_length=32)),
                ("old", models.JSONField(blank=True, null=True)),
                ("new", models.JSONField(blank=True, null=True)),
                ("request_id", models.CharField(blank=True, max_length=64)),
                ("client_addr", models.GenericIPAddressField(blank=True, null=True)),
                (
                    "org",
                    models.ForeignKey(
                        blank=True,
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        to="budgets.organization",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "audit entries",
                "ordering": ["-id"],
                "indexes": [
                    models.Index(fields=["org", "-id"], name="audit_org_newest"),
                    models.Index(
                        fields=["org", "object_type", "object_id", "-id"],
                        name="audit_org_object",
                    ),
                ],
            },
        ),
        migrations.RunSQL(APPEND_ONLY, DROP_APPEND_ONLY),
    ]
