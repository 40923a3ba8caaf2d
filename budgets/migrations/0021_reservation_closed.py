from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):
    # Concurrently: a large reservations table keeps taking holds meanwhile.
    atomic = False

    dependencies = [("budgets", "0020_chart_keys_ranked_by_window")]

    operations = [
        AddIndexConcurrently(
            model_name="reservation",
            index=models.Index(
                condition=~Q(status="active"), fields=["closed_at"], name="reservation_closed"
            ),
        ),
    ]
