"""Daily rollups keyed by the later of two midnights are rebuilt.

Days used to be keyed by date_trunc('day', hour, zone), which reads a local
midnight that happens twice (America/Havana, 2026-11-01) as its later
instant: that day was keyed an hour after it began, refresh_days summed its
first hour into the day before, and the dashboard left that hour out of
"today". Days are now keyed by the first instant of their local date
(tollgate_local_trunc, budgets/sql/functions/10_subjects.sql).

This forgets in which zone the days of such an org were built (its
tracking_dailyrollupzone row), which is how a changed time zone is handled
too: the next aggregate_usage pass rebuilds that org's days whole from its
hourly rollups, exactly, deleting the rows of the old keys, and until then the
dashboard sums the org's hourly rollups (exact, slower). An org is affected
when a local date within a day of its daily rows' span has a midnight that
is not its first instant: the instant just before PostgreSQL's reading of it
already lies in that date. Other orgs' rows were keyed and summed right and
are left alone. The test is the definition of a first instant, not the rule
that computes one: a migration runs before the SQL functions are installed.
"""

from django.db import migrations, models

FORGET_DAYS_KEYED_BY_A_LATER_MIDNIGHT = """
DELETE FROM tracking_dailyrollupzone z
WHERE EXISTS (
    SELECT 1
    FROM (SELECT min(d.day) AS lo, max(d.day) AS hi
          FROM tracking_dailyrollup d WHERE d.org_id = z.org_id) s
    CROSS JOIN LATERAL generate_series(
        date_trunc('day', s.lo AT TIME ZONE z.time_zone) - interval '1 day',
        date_trunc('day', s.hi AT TIME ZONE z.time_zone) + interval '1 day',
        interval '1 day') AS m(midnight)
    WHERE ((m.midnight AT TIME ZONE z.time_zone) - interval '1 microsecond')
          AT TIME ZONE z.time_zone >= m.midnight
)
"""


class Migration(migrations.Migration):
    dependencies = [
        ("tracking", "0004_price_tiers_and_usage_parts"),
    ]

    operations = [
        migrations.AlterField(
            model_name="dailyrollup",
            name="day",
            field=models.DateTimeField(
                help_text="Start of the local day: the first instant of its date."
            ),
        ),
        migrations.RunSQL(FORGET_DAYS_KEYED_BY_A_LATER_MIDNIGHT, migrations.RunSQL.noop),
    ]
