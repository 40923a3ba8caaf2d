"""Backtest of the budget forecasts (budgets/sql/functions/25_forecasts.sql)
on seeded history: forecasts made part-way through each period against the
period's actual end.

    .venv/bin/python -m loadtests.forecast_backtest [--seed 7] [--weeks 30]

The history is synthetic but shaped like an org's LLM spend, and the same for
a seed: three teams with their own levels in the org's zone
(America/New_York, so two DST changes fall inside): weekday working hours
busy, evenings and nights quiet, weekends low; a day-level swing (some days
are busier all day, lognormal sigma 0.15), per-hour noise (lognormal sigma 0.3),
a batch job on about one day in forty (3 hours at 6x), and growth of 1% a
week. It is written as hourly rollups of a scratch org, which is deleted at
the end, so the real SQL (tollgate_forecast_refresh, then tollgate_forecast)
makes every forecast, with `at` set to the moment of the forecast and the
spend before it as the window's spend.

Forecasts are made for each team and the org, at these points:
day budgets at 09:00 and 15:00 local; week budgets after 1 to 6 whole days;
month budgets after 5, 10, 15, 20 and 25 days. The first four weeks are
history only. Compared with two baselines a FinOps user might otherwise use:
the period's run rate so far (spent / elapsed x length) and the trailing
7 days' flat hourly rate (the dashboard's month-end KPI). Run-out: for each
forecast, a limit at 90% of the period's actual spend (so it runs out
inside the period) and the error of runs_out_at against the hour it was
actually crossed, where that is after the forecast.

Writes docs/benchmarks/forecast.md.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from loadtests.harness.paths import BASE_DIR
from loadtests.harness.seed import django_setup
from loadtests.reports.markdown import write_report

REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "forecast.md"
ORG_SLUG = "forecast-backtest"
TIME_ZONE = "America/New_York"
ZONE = zoneinfo.ZoneInfo(TIME_ZONE)
# The teams' dollars an hour at the busiest time of a working day.
TEAMS = {"search": 6.0, "support": 2.5, "research": 1.2}
START = datetime(2026, 3, 2, tzinfo=ZONE)  # a Monday, before the March DST change
HOUR = timedelta(hours=1)


def hour_shape(local: datetime) -> float:
    """How busy an hour of the week is, relative to a working hour's peak."""
    weekend = local.weekday() >= 5
    h = local.hour
    if 9 <= h < 18:
        level = 1.0 if h not in (12, 13) else 0.8
    elif 7 <= h < 9 or 18 <= h < 21:
        level = 0.35
    else:
        level = 0.08
    return level * (0.15 if weekend else 1.0)


def synthetic_history(seed: int, weeks: int) -> dict[str, dict[datetime, float]]:
    """{team: {UTC hour: dollars}} over `weeks` weeks from START, the same for a seed."""
    rng = random.Random(seed)
    start = START.astimezone(UTC)
    hours = [start + i * HOUR for i in range(weeks * 168)]
    history: dict[str, dict[datetime, float]] = {}
    for team, peak in TEAMS.items():
        day_factor: dict[object, float] = {}
        batch_days: set[object] = set()
        spend: dict[datetime, float] = {}
        for hour in hours:
            local = hour.astimezone(ZONE)
            day = local.date()
            if day not in day_factor:
                day_factor[day] = rng.lognormvariate(0, 0.15)
                if rng.random() < 1 / 40:
                    batch_days.add(day)
            growth = 1.01 ** ((hour - start) / timedelta(weeks=1))
            cost = peak * hour_shape(local) * day_factor[day] * growth
            cost *= rng.lognormvariate(-0.045, 0.3)  # mean-one noise
            if day in batch_days and 1 <= local.hour < 4:
                cost += peak * 6
            spend[hour] = round(cost, 6)
        history[team] = spend
    return history


def period_bounds(period: str, local: datetime) -> tuple[datetime, datetime]:
    """The local day, ISO week or month containing `local` (as tollgate_period_bounds)."""
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return start.replace(tzinfo=ZONE).astimezone(UTC), end.replace(tzinfo=ZONE).astimezone(UTC)


@dataclass
class Forecast:
    period: str
    point: str  # when in the period it was made ("09:00", "day 3", ...)
    subject: str
    at: datetime
    end: datetime
    spent: float
    actual: float
    projected: float
    linear: float
    trailing: float
    runout_error_hours: float | None


def forecast_points(first: datetime, last: datetime) -> list[tuple[str, str, datetime]]:
    """(period, point, UTC instant) of every forecast in [first, last)."""
    points = []
    day = first.astimezone(ZONE).replace(hour=0, minute=0, second=0, microsecond=0)
    while day.astimezone(UTC) < last:
        naive = day.replace(tzinfo=None)
        for hour in (9, 15):
            points.append(("day", f"{hour:02d}:00", naive.replace(hour=hour)))
        if naive.weekday() != 0:  # after 1..6 whole days of the ISO week
            points.append(("week", f"day {naive.weekday()}", naive))
        if naive.day in (6, 11, 16, 21, 26):  # after 5, 10, ... whole days of the month
            points.append(("month", f"day {naive.day - 1}", naive))
        day = (naive + timedelta(days=1)).replace(tzinfo=ZONE)
    return [
        (period, point, local.replace(tzinfo=ZONE).astimezone(UTC))
        for period, point, local in points
    ]


def run(seed: int, weeks: int) -> list[Forecast]:
    from django.db import connection

    from budgets.models import Budget, Organization
    from budgets.services import organization_create
    from tracking.models import HourlyRollup

    history = synthetic_history(seed, weeks)
    org_spend: dict[datetime, float] = defaultdict(float)
    for spend in history.values():
        for hour, cost in spend.items():
            org_spend[hour] += cost
    series = {"org": dict(org_spend), **history}
    hours = sorted(org_spend)
    first_hour, end_of_data = hours[0], hours[-1] + HOUR

    Organization.objects.filter(slug=ORG_SLUG).delete()
    org = organization_create(slug=ORG_SLUG, time_zone=TIME_ZONE)
    results: list[Forecast] = []
    try:
        teams = {slug: org.teams.create(slug=slug) for slug in TEAMS}
        HourlyRollup.objects.bulk_create(
            (
                HourlyRollup(
                    org=org, team=teams[t], model="gpt-4o", hour=h, cost_usd=Decimal(str(c))
                )
                for t, spend in history.items()
                for h, c in spend.items()
            ),
            batch_size=5000,
        )
        # One budget per subject and period, so the refresh writes their profiles;
        # their limits are passed to the forecast per test case instead.
        for period in ("day", "week", "month"):
            Budget.objects.create(org=org, scope="org", period=period, limit_usd=1)
            for team in teams.values():
                Budget.objects.create(org=org, scope="team", team=team, period=period, limit_usd=1)
        profile_of = {}
        for budget in Budget.objects.filter(org=org).select_related("team"):
            profile_of[(budget.team.slug if budget.team else "org", budget.period)] = budget.pk

        points = forecast_points(first_hour + timedelta(weeks=4), end_of_data)
        by_instant: dict[datetime, list[tuple[str, str]]] = defaultdict(list)
        for period, point, at in points:
            by_instant[at].append((period, point))
        with connection.cursor() as cursor:
            for n, at in enumerate(sorted(by_instant)):
                if n % 50 == 0:
                    print(f"{at:%Y-%m-%d} …", flush=True)
                cursor.execute("SELECT tollgate_forecast_refresh(%s, %s)", [org.pk, at])
                for period, point in by_instant[at]:
                    start, end = period_bounds(period, at.astimezone(ZONE))
                    if end > end_of_data:
                        continue
                    for subject, spend in series.items():
                        results.append(
                            one_forecast(
                                cursor,
                                profile_of[(subject, period)],
                                period,
                                point,
                                subject,
                                spend,
                                at,
                                start,
                                end,
                            )
                        )
    finally:
        HourlyRollup.objects.filter(org=org).delete()
        Organization.objects.filter(pk=org.pk).delete()
    return results


def one_forecast(cursor, budget_id, period, point, subject, spend, at, start, end) -> Forecast:
    window = [h for h in spend if start <= h < end]
    spent = sum(spend[h] for h in window if h < at)
    actual = sum(spend[h] for h in window)
    limit = actual * 0.9
    cursor.execute(
        """SELECT fc.projected_usd, fc.runs_out_at
           FROM budgets_budgetforecast f
           CROSS JOIN LATERAL tollgate_forecast(f.cumulative_usd, %s, %s, %s, %s, %s) fc
           WHERE f.budget_id = %s""",
        [TIME_ZONE, at, end, Decimal(str(spent)), Decimal(str(limit)), budget_id],
    )
    projected, runs_out_at = cursor.fetchone()
    elapsed = (at - start) / HOUR
    length = (end - start) / HOUR
    last_week = sum(spend.get(at - (i + 1) * HOUR, 0.0) for i in range(168))
    runout_error = None
    if spent < limit:
        running, crossed = 0.0, None
        for h in sorted(window):
            if running + spend[h] >= limit:
                crossed = h + (limit - running) / spend[h] * HOUR
                break
            running += spend[h]
        if crossed is not None and runs_out_at is not None:
            runout_error = abs((runs_out_at - crossed) / HOUR)
        elif crossed is not None:
            runout_error = (end - crossed) / HOUR  # said "not in this period"
    return Forecast(
        period=period,
        point=point,
        subject=subject,
        at=at,
        end=end,
        spent=spent,
        actual=actual,
        projected=float(projected),
        linear=spent / elapsed * length if elapsed else float("nan"),
        trailing=spent + last_week / 168 * (length - elapsed),
        runout_error_hours=runout_error,
    )


def time_listing(budgets: int, rounds: int) -> tuple[float, float]:
    """Median ms of tollgate_list_budgets (GET /v1/budgets' one statement) for
    an org of `budgets` month budgets (one team each, a window with spend, a
    4-week profile), with the forecasts and without them (their rows deleted:
    the list as it was), alternating, `rounds` calls each."""
    import time

    from django.db import connection

    from budgets.models import Organization
    from budgets.services import organization_create

    slug = f"{ORG_SLUG}-listing"
    Organization.objects.filter(slug=slug).delete()
    org = organization_create(slug=slug, time_zone=TIME_ZONE)
    week = [
        Decimal(str(hour_shape(datetime(2026, 3, 2, tzinfo=ZONE) + i * HOUR))) for i in range(168)
    ]
    cumulative = [sum(week[:i], Decimal(0)) for i in range(169)]
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                WITH teams AS (
                    INSERT INTO budgets_team (org_id, slug, name, created_at)
                    SELECT %(org)s, 'team-' || i, '', now() FROM generate_series(1, %(n)s) i
                    RETURNING id
                ), budgets AS (
                    INSERT INTO budgets_budget (org_id, scope, team_id, period, limit_usd,
                                                soft_limit_pct, enforce, created_at, updated_at)
                    SELECT %(org)s, 'team', id, 'month', 400, 80, true, now(), now() FROM teams
                    RETURNING id
                )
                INSERT INTO budgets_budgetwindow (budget_id, period_start, period_end, spent,
                                                  reserved)
                SELECT b.id, pb.period_start, pb.period_end, 100 + b.id %% 200, 0
                FROM budgets b
                CROSS JOIN LATERAL tollgate_period_bounds('month', %(tz)s, now()) pb
                """,
                {"org": org.pk, "n": budgets, "tz": TIME_ZONE},
            )

            def add_forecasts() -> None:
                cursor.execute(
                    """INSERT INTO budgets_budgetforecast (budget_id, as_of, basis, weeks,
                                                           history_hours, hourly_usd, cumulative_usd)
                       SELECT id, date_trunc('hour', now()), 'hour_of_week', 4, 672, %s, %s
                       FROM budgets_budget WHERE org_id = %s""",
                    [week, cumulative, org.pk],
                )

            for n in range(rounds):
                for with_forecasts in (True, False) if n % 2 == 0 else (False, True):
                    cursor.execute(
                        "DELETE FROM budgets_budgetforecast WHERE budget_id IN "
                        "(SELECT id FROM budgets_budget WHERE org_id = %s)",
                        [org.pk],
                    )
                    if with_forecasts:
                        add_forecasts()
                    started = time.perf_counter()
                    cursor.execute("SELECT tollgate_list_budgets(%s, NULL)", [org.pk])
                    cursor.fetchone()
                    times[with_forecasts].append((time.perf_counter() - started) * 1000)
    finally:
        Organization.objects.filter(pk=org.pk).delete()
    return statistics.median(times[True]), statistics.median(times[False])


def time_refresh(teams: int, users_per_team: int, rounds: int) -> tuple[int, int, float]:
    """(rollup rows read, budgets written, median ms) of the worker's
    tollgate_forecast_refresh for a scratch org with 4 weeks of hourly
    rollups for every user of every team (one model), a month budget per
    team, a day budget per user and an org month budget."""
    import time

    from django.db import connection

    from budgets.models import Organization
    from budgets.services import organization_create
    from tracking.models import HourlyRollup

    slug = f"{ORG_SLUG}-refresh"
    Organization.objects.filter(slug=slug).delete()
    org = organization_create(slug=slug, time_zone=TIME_ZONE)
    times = []
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                """
                WITH teams AS (
                    INSERT INTO budgets_team (org_id, slug, name, created_at)
                    SELECT %(org)s, 'team-' || i, '', now() FROM generate_series(1, %(teams)s) i
                    RETURNING id
                ), users AS (
                    INSERT INTO budgets_enduser (org_id, external_id, created_at)
                    SELECT %(org)s, 'user-' || t.id || '-' || u, now()
                    FROM teams t CROSS JOIN generate_series(1, %(users)s) u
                    RETURNING id, split_part(external_id, '-', 2)::bigint AS team_id
                ), team_budgets AS (
                    INSERT INTO budgets_budget (org_id, scope, team_id, period, limit_usd,
                                                soft_limit_pct, enforce, created_at, updated_at)
                    SELECT %(org)s, 'team', id, 'month', 1000, 80, true, now(), now() FROM teams
                ), user_budgets AS (
                    INSERT INTO budgets_budget (org_id, scope, user_id, period, limit_usd,
                                                soft_limit_pct, enforce, created_at, updated_at)
                    SELECT %(org)s, 'user', id, 'day', 50, 80, true, now(), now() FROM users
                )
                INSERT INTO tracking_hourlyrollup (org_id, team_id, user_id, model, hour,
                    requests, errors, unpriced_requests, input_tokens, cache_read_tokens,
                    cache_write_tokens, output_tokens, reasoning_tokens, cost_usd)
                SELECT %(org)s, u.team_id, u.id, 'gpt-4o', h, 10, 0, 0, 1000, 0, 0, 500, 0,
                       round((random() * 0.5)::numeric, 6)
                FROM users u
                CROSS JOIN generate_series(date_trunc('hour', now()) - interval '672 hours',
                                           date_trunc('hour', now()) - interval '1 hour',
                                           interval '1 hour') h
                """,
                {"org": org.pk, "teams": teams, "users": users_per_team},
            )
            cursor.execute(
                """INSERT INTO budgets_budget (org_id, scope, period, limit_usd, soft_limit_pct,
                                               enforce, created_at, updated_at)
                   VALUES (%s, 'org', 'month', 100000, 80, true, now(), now())""",
                [org.pk],
            )
            cursor.execute("ANALYZE tracking_hourlyrollup")
            cursor.execute("SELECT count(*) FROM tracking_hourlyrollup WHERE org_id = %s", [org.pk])
            rows = cursor.fetchone()[0]
            for _ in range(rounds):
                started = time.perf_counter()
                cursor.execute("SELECT tollgate_forecast_refresh(%s, now())", [org.pk])
                written = cursor.fetchone()[0]
                times.append((time.perf_counter() - started) * 1000)
    finally:
        HourlyRollup.objects.filter(org=org).delete()
        Organization.objects.filter(pk=org.pk).delete()
    return rows, written, statistics.median(times)


def ape(estimate: float, actual: float) -> float:
    return abs(estimate - actual) / actual * 100


def summary_rows(results: list[Forecast], key) -> list[str]:
    groups: dict[tuple, list[Forecast]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    rows = []
    for group, items in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        method = [ape(r.projected, r.actual) for r in items]
        bias = statistics.mean((r.projected - r.actual) / r.actual * 100 for r in items)
        linear = [ape(r.linear, r.actual) for r in items if not math.isnan(r.linear)]
        trailing = [ape(r.trailing, r.actual) for r in items]
        runouts = [r.runout_error_hours for r in items if r.runout_error_hours is not None]
        rows.append(
            f"| {' | '.join(group)} | {len(items)} | **{statistics.mean(method):.1f}%** "
            f"| {statistics.quantiles(method, n=10)[-1]:.1f}% | {bias:+.1f}% "
            f"| {statistics.mean(linear):.1f}% | {statistics.mean(trailing):.1f}% "
            f"| {statistics.median(runouts):.1f} h ({len(runouts)}) |"
            if runouts
            else f"| {' | '.join(group)} | {len(items)} | **{statistics.mean(method):.1f}%** "
            f"| {statistics.quantiles(method, n=10)[-1]:.1f}% | {bias:+.1f}% "
            f"| {statistics.mean(linear):.1f}% | {statistics.mean(trailing):.1f}% | n/a |"
        )
    return rows


def _order(group: tuple) -> tuple:
    rank = {"day": 0, "week": 1, "month": 2}
    return tuple(
        (rank.get(part, 9), int(part.split()[-1].split(":")[0]) if part[-1].isdigit() else 0, part)
        for part in group
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.forecast_backtest", description=__doc__
    )
    parser.add_argument("--seed", type=int, default=7, help="the synthetic history's seed")
    parser.add_argument(
        "--weeks", type=int, default=30, help="weeks of history (the first 4 are not judged)"
    )
    parser.add_argument("--rounds", type=int, default=20, help="calls of the listing timed")
    args = parser.parse_args(argv)
    if args.weeks < 9:
        parser.error("--weeks must be at least 9 (4 of history, and a month to judge)")
    django_setup()
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    results = run(args.seed, args.weeks)
    listing = {n: time_listing(n, args.rounds) for n in (100, 1000)}
    refresh_rows, refresh_budgets, refresh_ms = time_refresh(100, 7, 3)
    load = max(load_before, os.getloadavg()[0])
    # The errors do not depend on the machine; the timings do, and a shared
    # machine busy with other work slows them.
    noisy = load > (os.cpu_count() or 1)
    header = [
        "| mean abs. error (MAPE) | 90th pct | bias | run rate so far (MAPE) "
        "| trailing 7 days flat (MAPE) | run-out error, median (forecasts) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines = [
        "# Forecast backtest",
        "",
        f"Generated by `.venv/bin/python -m loadtests.forecast_backtest --seed {args.seed} "
        f"--weeks {args.weeks} --rounds {args.rounds}` on {started:%Y-%m-%d %H:%M} UTC.",
        "",
        "The method (docs/forecasts.md): spend so far plus the trailing weeks' hour-of-week "
        "profile (up to 4 weeks, in the org's zone) for the hours left. Each forecast is made "
        "by the real SQL at the moment of the forecast, on "
        f"{args.weeks} weeks of synthetic hourly spend of three teams in {TIME_ZONE} "
        "(weekly seasonality, day-level swings, hourly noise, occasional batch jobs, 1% weekly "
        "growth; the loadtest's docstring has the details), the first 4 weeks as history only. "
        "Errors are of the projected end-of-period spend against the actual, per forecast "
        "(org and each team); bias is the mean signed error (negative: under). Baselines: "
        "the run rate of the period so far, and the trailing 7 days' flat hourly rate. "
        "Run-out: with a limit at 90% of the period's actual spend, the distance between "
        "`runs_out_at` and when it was actually crossed (forecasts made before the crossing).",
        "",
        "## By period",
        "",
        "| period | forecasts " + header[0],
        "|---|---:" + header[1],
        *summary_rows(results, lambda r: (r.period,)),
        "",
        "## By period and when in the period",
        "",
        "| period | made at | forecasts " + header[0],
        "|---|---|---:" + header[1],
        *summary_rows(results, lambda r: (r.period, r.point)),
        "",
        "## What the forecasts add to GET /v1/budgets",
        "",
        f"Load average up to {load:.1f} on {os.cpu_count()} cores"
        + (" (⚠ noisy: other work shared the machine; the times are high)." if noisy else "."),
        "",
        "Median time of its one statement (`tollgate_list_budgets`, from Python, "
        f"{args.rounds} calls each, alternating) for an org of N month budgets, each with a "
        "window with spend and a 4-week profile, against the same org with the profiles "
        "deleted (the list without forecasts).",
        "",
        "| budgets | with forecasts | without | per budget added |",
        "|---:|---:|---:|---:|",
        *(
            f"| {n:,} | {w:.1f} ms | {wo:.1f} ms | {(w - wo) * 1000 / n:.0f} µs |"
            for n, (w, wo) in listing.items()
        ),
        "",
        "## The worker's refresh at scale",
        "",
        "`tollgate_forecast_refresh` for an org with four weeks of hourly rollups of 100 teams "
        "of 7 users (one model; about what 10M events a month leave), a month budget per "
        "team, a day budget per user and an org budget: "
        f"{refresh_rows:,} rollup rows read, {refresh_budgets:,} profiles written, "
        f"**{refresh_ms:,.0f} ms** (median of 3). The worker runs it once an hour per org.",
        "",
    ]
    write_report(REPORT_PATH, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
