"""What reporting by tag costs (issue 26 §4): rows and time of the tag
rollups that `report_tags` turns on, and of keeping the API key in the
hourly rollups' grain (issue 26, key budgets seeded from pruned hours).

    .venv/bin/python -m loadtests.tag_rollups [--events 300000] [--days 7]

On this checkout's embedded PostgreSQL, a scratch org (slug bench-tags,
deleted at the end) gets --events synthetic events over the last --days days,
generated in SQL: 20 teams of 10 users, 4 models, 30 API keys, a `customer`
tag with 50 values (skewed; 10% of events without it) and a `feature` tag
with 7. Then, timed:

1. a rebuild of the org's hours (`aggregate_usage --rebuild`) with no tag
   reported, with `customer`, and with `customer` and `feature`;
2. building a newly marked name from the raw events (tag_rollups_build);
3. an incremental pass over 20,000 new events with no tag and with two;
4. GET /v1/usage's tag grouping over the whole range by day (rollups), and
   the same before the name is built (raw events), against the plain usage
   query grouped by team.

It counts the rollup rows each grain needs (the key rollups too), and how
many hourly rollup rows the key would add to (hour, team, user, model) when
each key serves one team and when keys cut across teams. Writes docs/benchmarks/tag-rollups.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from loadtests.harness.paths import BASE_DIR
from loadtests.harness.seed import django_setup
from loadtests.reports.markdown import write_report

REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "tag-rollups.md"
ORG_SLUG = "bench-tags"
NEW_EVENTS = 20_000

GENERATE = """
SELECT setseed(0.42);
INSERT INTO tracking_requestevent (org_id, event_id, team_id, user_id, key_id, model, provider,
    started_at, received_at, input_tokens, cache_read_tokens, cache_write_tokens,
    output_tokens, reasoning_tokens, cost_usd, priced, latency_ms, status, tags, payload_hash)
SELECT %(org_id)s, %(prefix)s || g, (%(teams)s::bigint[])[r.t],
    (%(users)s::bigint[])[r.t * 10 - r.u], (%(keys)s::bigint[])[r.k],
    (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4-5', 'gemini-2.5-flash'])[r.m], 'openai',
    r.at, %(received)s::timestamptz + g * interval '1 microsecond',
    500 + g %% 3000, g %% 700, 0, 100 + g %% 900, g %% 5 * 50,
    round((g %% 1000) * 0.0000137, 10), true, 200,
    CASE WHEN g %% 50 = 0 THEN 'error' ELSE 'ok' END,
    CASE WHEN r.c > 50 THEN jsonb_build_object('feature', 'f' || r.f)
         ELSE jsonb_build_object('customer', 'customer-' || r.c, 'feature', 'f' || r.f) END,
    md5(%(prefix)s || g)
FROM generate_series(1, %(events)s) g
CROSS JOIN LATERAL (
    SELECT 1 + floor(random() * 20)::int AS t, floor(random() * 10)::int AS u,
           1 + floor(random() * 30)::int AS k, 1 + floor(random() * 4)::int AS m,
           -- 50 customers, the first ones busiest; 1 in 10 events untagged.
           CASE WHEN random() < 0.1 THEN 51 ELSE 1 + floor(50 * random() * random())::int END AS c,
           1 + floor(random() * 7)::int AS f,
           %(start)s::timestamptz + random() * %(span)s::interval AS at,
           g AS correlated) r;
ANALYZE tracking_requestevent;
"""

# Hourly rollup rows of the org at three grains: as today, with the key, and
# with one key per team (a gateway key per team's app: the key adds no row).
GRAINS = [
    """SELECT count(*) FROM (
        SELECT DISTINCT date_trunc('hour', started_at, 'UTC'), team_id, user_id, model
        FROM tracking_requestevent WHERE org_id = %(org_id)s) a""",
    """SELECT count(*) FROM (
        SELECT DISTINCT date_trunc('hour', started_at, 'UTC'), team_id, user_id, model, key_id
        FROM tracking_requestevent WHERE org_id = %(org_id)s) a""",
    """SELECT count(*) FROM (
        SELECT DISTINCT date_trunc('hour', started_at, 'UTC'), team_id, user_id, model,
               team_id AS key_id
        FROM tracking_requestevent WHERE org_id = %(org_id)s) a""",
]
ROW_BYTES = """
SELECT (SELECT avg(pg_column_size(t.*)) FROM tracking_tagrollup t WHERE t.org_id = %(org_id)s),
       (SELECT avg(pg_column_size(r.*)) FROM tracking_hourlyrollup r WHERE r.org_id = %(org_id)s)
"""


def _timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.tag_rollups", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args(argv)
    if min(args.events, args.days) < 1:
        parser.error("--events and --days must be at least 1")
    django_setup()
    from django.db import connection

    from budgets.models import ApiKey, EndUser, Organization, Team
    from budgets.services import api_key_create, organization_create
    from tracking.models import HourlyRollup, KeyRollup, TagRollup
    from tracking.selectors import UsageQuery, usage_rows
    from tracking.services import rollups_refresh, tag_rollups_build

    started_at = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    Organization.objects.filter(slug=ORG_SLUG).delete()
    org = organization_create(slug=ORG_SLUG)
    teams = [Team.objects.create(org=org, slug=f"team-{t:02d}").pk for t in range(1, 21)]
    users = [
        EndUser.objects.create(org=org, external_id=f"user-{t:02d}-{u}").pk
        for t in range(1, 21)
        for u in range(10)
    ]
    keys = [api_key_create(org=org, name=f"app-{k}")[0].pk for k in range(30)]
    start = started_at - timedelta(days=args.days)
    since = start - timedelta(hours=1)

    def mark(*names: str) -> None:
        Organization.objects.filter(pk=org.pk).update(report_tags=list(names))

    def generate(prefix: str, events: int, first: datetime, span: timedelta, received) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                GENERATE,
                {
                    "org_id": org.pk,
                    "prefix": prefix,
                    "teams": teams,
                    "users": users,
                    "keys": keys,
                    "events": events,
                    "start": first,
                    "span": span,
                    "received": received,
                },
            )

    try:
        print(f"Generating {args.events:,} events …", flush=True)
        generate("e", args.events, start, timedelta(days=args.days), start)
        # Moves the watermark past them (a database that never aggregated has
        # none), so that rebuilds read them all.
        time.sleep(1.1)
        rollups_refresh(lag=timedelta(0))
        rows: dict[str, int] = {}
        rebuild: dict[str, float] = {}
        for label, names in (("none", ()), ("customer", ("customer",)),
                             ("customer, feature", ("customer", "feature"))):  # fmt: skip
            mark(*names)
            tag_rollups_build()
            seconds, _ = _timed(lambda: rollups_refresh(since=since))
            rebuild[label] = seconds
            print(f"rebuild with tags {label}: {seconds:.2f} s", flush=True)
        rows["hourly"] = HourlyRollup.objects.filter(org=org).count()
        for name in ("customer", "feature"):
            rows[name] = TagRollup.objects.filter(org=org, name=name).count()
        rows["key"] = KeyRollup.objects.filter(org=org).count()
        with connection.cursor() as cursor:
            grains = []
            for statement in GRAINS:
                cursor.execute(statement, {"org_id": org.pk})
                grains.append(cursor.fetchone()[0])
            plain_rows, keyed_rows, team_keyed_rows = grains
            cursor.execute(ROW_BYTES, {"org_id": org.pk})
            tag_bytes, hourly_bytes = cursor.fetchone()

        # A name marked now: built from the raw events.
        mark("customer")
        tag_rollups_build()  # drops feature
        query = UsageQuery(org_id=org.pk, start=since, end=started_at + timedelta(hours=1),
                           granularity="day", group_by=("team", "tag"), tag="feature")  # fmt: skip
        mark("customer", "feature")
        raw_query = [_timed(lambda: usage_rows(query))[0] for _ in range(3)]
        build_seconds, _ = _timed(tag_rollups_build)
        rolled_query = [_timed(lambda: usage_rows(query))[0] for _ in range(5)]
        plain = UsageQuery(org_id=org.pk, start=query.start, end=query.end, granularity="day",
                           group_by=("team",))  # fmt: skip
        plain_query = [_timed(lambda: usage_rows(plain))[0] for _ in range(5)]

        # Incremental passes: new events received after the watermark.
        passes: dict[str, float] = {}
        for label, names in (("none", ()), ("customer, feature", ("customer", "feature"))):
            mark(*names)
            tag_rollups_build()
            rollups_refresh(lag=timedelta(0))  # anything pending first
            generate(f"n{len(names)}-", NEW_EVENTS, started_at - timedelta(hours=1),
                     timedelta(hours=1), datetime.now(UTC))  # fmt: skip
            time.sleep(1.1)  # the pass leaves the last second to transactions still open
            seconds, report = _timed(lambda: rollups_refresh(lag=timedelta(0)))
            passes[label] = seconds
            print(f"pass over {report.events:,} new events, tags {label}: {seconds:.2f} s")

    finally:
        ApiKey.objects.filter(org__slug=ORG_SLUG).delete()
        Organization.objects.filter(slug=ORG_SLUG).delete()
    load = max(load_before, os.getloadavg()[0])
    events_total = args.events + 2 * NEW_EVENTS
    ms = lambda xs: f"{1000 * statistics.median(xs):.0f}"  # noqa: E731
    lines = [
        "# Tag rollups and keys in the hourly grain: what they cost",
        "",
        f"Generated by `.venv/bin/python -m loadtests.tag_rollups --events {args.events} "
        f"--days {args.days}` on {started_at:%Y-%m-%d %H:%M} UTC "
        f"(load average {load:.1f} on {os.cpu_count()} cores; the machine is shared, so "
        "times are indicative).",
        "",
        f"One org, {args.events:,} events over {args.days} days: 20 teams of 10 users, "
        "4 models, 30 API keys, `customer` (50 values, skewed, 10% of events without it), "
        "`feature` (7 values).",
        "",
        "## Rows",
        "",
        "| grain | rows | per hourly row |",
        "|---|---:|---:|",
        f"| hourly rollups (hour, team, user, model) | {rows['hourly']:,} | 1.00 |",
        f"| tag rollups of `customer` (hour, value, team, model) | {rows['customer']:,} "
        f"| {rows['customer'] / rows['hourly']:.2f} |",
        f"| tag rollups of `feature` | {rows['feature']:,} "
        f"| {rows['feature'] / rows['hourly']:.2f} |",
        f"| key rollups (hour, key, model): what key budgets seed from | {rows['key']:,} "
        f"| {rows['key'] / rows['hourly']:.2f} |",
        f"| hourly + key, keys cutting across teams (30 keys) | {keyed_rows:,} "
        f"| {keyed_rows / plain_rows:.2f} |",
        f"| hourly + key, one key per team | {team_keyed_rows:,} "
        f"| {team_keyed_rows / plain_rows:.2f} |",
        "",
        f"A row: {tag_bytes:.0f} bytes of tag rollup, {hourly_bytes:.0f} of hourly rollup "
        "(on average, before indexes). The key's rows are counted from the raw events "
        f"({plain_rows:,} rows at today's grain; the table above is after the rebuild).",
        "",
        "## Time",
        "",
        "| step | seconds |",
        "|---|---:|",
        *[f"| rebuild of every hour, tags reported: {k} | {v:.2f} |" for k, v in rebuild.items()],
        f"| build a newly marked name (`feature`) from {args.events:,} raw events "
        f"| {build_seconds:.2f} |",
        *[
            f"| incremental pass over {NEW_EVENTS:,} new events, tags: {k} | {v:.2f} |"
            for k, v in passes.items()
        ],
        "",
        f"GET /v1/usage over the {args.days} days by day (median ms): `group_by=team,tag:feature` "
        f"from tag rollups {ms(rolled_query)}, the same before the name is built (raw events) "
        f"{ms(raw_query)}, `group_by=team` (hourly rollups) {ms(plain_query)}.",
        "",
        f"({events_total:,} events in all.)",
        "",
    ]
    write_report(REPORT_PATH, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
