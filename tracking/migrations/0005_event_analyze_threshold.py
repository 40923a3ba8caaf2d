"""Re-analyze request events every 20,000 changed rows, not every 10% of the table.

The default (autovacuum_analyze_scale_factor 0.1) waits for 1M new events on
a 10M-event table. Until then an org that signed up after the last ANALYZE
looks empty to the planner (~1 row for its org_id), and plans chosen for an
empty org walk all of its events: the mixed locust scenario measured the
dashboard summary of such an org at ~620 ms, ~100 ms right after ANALYZE.
An ANALYZE samples a fixed 30,000 rows whatever the table's size (~1-3 s of
an autovacuum worker here) and autovacuum runs it at most once a minute.
"""

from django.db import migrations

SET = """
ALTER TABLE tracking_requestevent SET (
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 20000)
"""
RESET = """
ALTER TABLE tracking_requestevent RESET (
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold)
"""


class Migration(migrations.Migration):
    dependencies = [("tracking", "0004_daily_rollups")]

    operations = [migrations.RunSQL(SET, RESET)]
