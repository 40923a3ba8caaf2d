from decimal import Decimal

from django.db import migrations, models


class Migration(migrations.Migration):
    """What events have settled into a hold (partial settlements). Holds that
    closed before it was kept stay NULL (not known); active ones start at 0,
    and new ones get 0 from the column's default."""

    dependencies = [
        ("budgets", "0005_unpriced_policy"),
    ]

    operations = [
        migrations.AddField(
            model_name="reservation",
            name="settled",
            field=models.DecimalField(blank=True, decimal_places=10, max_digits=20, null=True),
        ),
        # Active holds are few (the partial index reservation_active_expiry);
        # AddField's lock keeps new ones out until the default below is set.
        migrations.RunSQL(
            "UPDATE budgets_reservation SET settled = 0 WHERE status = 'active'",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="reservation",
            name="settled",
            field=models.DecimalField(
                blank=True, db_default=Decimal("0"), decimal_places=10, max_digits=20, null=True
            ),
        ),
        migrations.AddConstraint(
            model_name="reservation",
            constraint=models.CheckConstraint(
                condition=models.Q(("settled__gte", 0)), name="reservation_settled_non_negative"
            ),
        ),
    ]
