"""Rollups hold exactly the events received up to the aggregation watermark,
and readers add the raw tail received after it (they used to read every hour
with a late event whole from raw events, ~1M rows for a busy hour).

Reinstalls budgets/sql/functions.sql (tollgate_dashboard_usage), and
recomputes the buckets that a pass of the old code had filled past the
watermark, so that no reader counts those events twice."""

from django.db import migrations

from budgets.migrations._functions import install


def rollups_up_to_watermark(apps, schema_editor):
    from tracking import selectors, services

    watermark = selectors.job_watermark(selectors.AGGREGATION_JOB)
    if watermark is None:
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT org_id, date_trunc('hour', started_at, 'UTC') "
            "FROM tracking_requestevent WHERE received_at > %s",
            [watermark],
        )
        buckets = cursor.fetchall()
    for start in range(0, len(buckets), services.REFRESH_BATCH_SIZE):
        services.rollups_refresh_buckets(buckets[start : start + services.REFRESH_BATCH_SIZE])


class Migration(migrations.Migration):
    dependencies = [
        ("budgets", "0016_reservation_analyze_threshold"),
        ("tracking", "0005_event_analyze_threshold"),
    ]

    operations = [
        migrations.RunPython(install, migrations.RunPython.noop),
        migrations.RunPython(rollups_up_to_watermark, migrations.RunPython.noop),
    ]
