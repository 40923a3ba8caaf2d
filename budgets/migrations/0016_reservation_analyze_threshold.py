"""Re-analyze reservations every 20,000 changed rows, not every 10% of the
table (see tracking 0005: an org newer than the statistics looks empty to
the planner; closed reservations are kept, so the table only grows)."""

from django.db import migrations

SET = """
ALTER TABLE budgets_reservation SET (
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000)
"""
RESET = """
ALTER TABLE budgets_reservation RESET (
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold)
"""


class Migration(migrations.Migration):
    dependencies = [("budgets", "0015_record_events_reads")]

    operations = [migrations.RunSQL(SET, RESET)]
