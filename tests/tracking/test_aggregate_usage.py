"""manage.py aggregate_usage: hourly rollups that equal the raw events exactly,
incremental from a watermark, idempotent, safe for late events."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import time
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.utils import timezone

from tests.conftest import start_manage
from tests.tracking.conftest import hours_ago, raw_sums, rollups, run
from tracking.management.commands.aggregate_usage import Command
from tracking.models import AggregationState, HourlyRollup, RequestEvent
from tracking.services import RefreshReport, aggregation_lag, rollups_refresh

pytestmark = pytest.mark.django_db


def row_versions() -> dict[int, str]:
    """xmin of every rollup row: it changes when the row is rewritten."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, xmin::text FROM tracking_hourlyrollup")
        return dict(cursor.fetchall())


def watermark():
    return AggregationState.objects.get(name="aggregate_usage").watermark


def test_rollup_sums_equal_raw_sums_exactly(make_org, make_event, no_lag):
    rng = random.Random(7)
    orgs = [make_org(), make_org()]
    for _ in range(300):
        make_event(
            rng.choice(orgs),
            team=rng.choice(["search", "support", None]),
            user=rng.choice(["alice", "bob", None]),
            model=rng.choice(["gpt-4o", "claude-sonnet-4", "gemini-2.5-pro"]),
            started_at=hours_ago(rng.randrange(48), minutes=rng.uniform(0, 59.99)),
            # Costs with all ten decimals used: a float anywhere would show.
            cost=str(Decimal(rng.randrange(10**12)) / 10**10),
            priced=rng.random() > 0.1,
            status="error" if rng.random() < 0.2 else "ok",
            input_tokens=rng.randrange(10**6),
            cache_read_tokens=rng.randrange(10**5),
            cache_write_tokens=rng.randrange(10**4),
            output_tokens=rng.randrange(10**5),
            reasoning_tokens=rng.randrange(10**4),
        )

    output = run("aggregate_usage")

    assert rollups() == raw_sums()
    assert sum(r.cost_usd for r in HourlyRollup.objects.all()) == sum(
        e.cost_usd for e in RequestEvent.objects.all()
    )
    assert "300 events" in output


def test_rerun_leaves_the_same_rows_untouched(org, make_event):
    for hours in (1, 2, 30):
        make_event(org, started_at=hours_ago(hours, minutes=10))
    run("aggregate_usage")
    before, versions = rollups(), row_versions()

    run("aggregate_usage")
    run("aggregate_usage", "--rebuild", "--since", "2000-01-01")

    assert rollups() == before
    # Not even rewritten with equal values.
    assert row_versions() == versions


def test_incremental_pass_adds_only_the_new_events(org, make_event, no_lag):
    old = timezone.now() - timedelta(days=1)
    make_event(org, started_at=hours_ago(5), received_at=old)
    make_event(org, started_at=hours_ago(4), received_at=old)
    run("aggregate_usage")
    versions = row_versions()

    make_event(org, started_at=hours_ago(5, minutes=30), cost="0.5")
    report = rollups_refresh()

    # The new event alone is read, not the hour it falls in.
    assert report.buckets == 1 and report.events == 1
    assert rollups() == raw_sums()
    rewritten = {pk for pk, v in row_versions().items() if versions.get(pk) != v}
    assert rewritten == {HourlyRollup.objects.get(hour=hours_ago(5)).pk}


def test_first_pass_takes_every_event_and_sets_the_watermark(org, make_event):
    make_event(org, started_at=hours_ago(2000), received_at=timezone.now() - timedelta(days=90))
    before = timezone.now()

    run("aggregate_usage")

    assert rollups() == raw_sums() and len(rollups()) == 1
    # The database's clock minus the lag, taken when the pass began.
    assert before - aggregation_lag() - timedelta(seconds=5) < watermark() <= timezone.now()


def rolled_up_requests() -> int:
    return sum(r.requests for r in HourlyRollup.objects.all())


def insert_event(conn: psycopg.Connection, org_id: int, started_at, cost: str) -> None:
    """An event stored the way ingest stores it: received_at = now(), the
    start of the transaction it is inserted in."""
    conn.execute(
        "INSERT INTO tracking_requestevent (org_id, event_id, model, provider, started_at, "
        "received_at, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, "
        "reasoning_tokens, cost_usd, priced, status, tags, payload_hash) "
        "VALUES (%s, %s, 'gpt-4o', 'openai', %s, now(), 1, 0, 0, 1, 0, %s, true, 'ok', '{}', '')",
        [org_id, f"late-{cost}", started_at, cost],
    )


@pytest.mark.django_db(transaction=True)
def test_a_running_transaction_holds_the_watermark_before_its_start(
    test_database_url, org, make_event
):
    """An ingest transaction that stamped received_at (its start) before a
    pass and commits after it: the pass leaves the watermark before that
    start, so the next pass takes its event."""
    make_event(org, started_at=hours_ago(3), received_at=timezone.now() - timedelta(minutes=5))
    with psycopg.connect(test_database_url) as ingest:
        insert_event(ingest, org.id, hours_ago(3, minutes=20), "0.5")
        [(started,)] = ingest.execute("SELECT now()").fetchall()
        time.sleep(1.5)  # past SETTLE: only the running transaction holds the pass back
        run("aggregate_usage")
        assert watermark() < started
        assert rolled_up_requests() == 1
        ingest.commit()

    run("aggregate_usage")

    assert watermark() > started
    assert rollups() == raw_sums()
    assert rolled_up_requests() == 2


@pytest.mark.django_db(transaction=True)
def test_a_transaction_older_than_the_lag_holds_the_watermark_back_no_further(
    test_database_url, org, make_event, settings
):
    settings.AGGREGATION_LAG_SECONDS = 2  # two minutes in production
    make_event(org, started_at=hours_ago(3), received_at=timezone.now() - timedelta(minutes=5))
    with psycopg.connect(test_database_url) as stuck:
        [(started,)] = stuck.execute("SELECT now()").fetchall()
        time.sleep(2.5)
        before = timezone.now()
        run("aggregate_usage")
        stuck.rollback()

    assert started < watermark()
    assert before - timedelta(seconds=2.5) < watermark() <= before - timedelta(seconds=1.5)
    assert HourlyRollup.objects.get().requests == 1


def test_events_of_the_last_second_wait_for_a_later_pass(org, make_event):
    make_event(org, started_at=hours_ago(3), received_at=timezone.now() - timedelta(minutes=5))
    make_event(org, started_at=hours_ago(3, minutes=1), cost="0.5")

    run("aggregate_usage")

    # Exactly the events received up to the watermark: the one of just now
    # (inside SETTLE) is the raw tail that readers add.
    assert watermark() < RequestEvent.objects.get(cost_usd=Decimal("0.5")).received_at
    assert [(r.requests, r.cost_usd) for r in HourlyRollup.objects.all()] == [(1, Decimal("0.001"))]


def test_late_event_for_an_old_hour_updates_that_hour(org, make_event, no_lag):
    make_event(org, started_at=hours_ago(200), received_at=timezone.now() - timedelta(days=8))
    run("aggregate_usage")

    make_event(org, started_at=hours_ago(200, minutes=5), cost="2")
    run("aggregate_usage")

    row = HourlyRollup.objects.get()
    assert (row.requests, row.cost_usd) == (2, Decimal("2.001"))


def test_watermark_never_moves_back(org, make_event):
    run("aggregate_usage")
    first = watermark()
    AggregationState.objects.filter(name="aggregate_usage").update(
        watermark=first + timedelta(hours=1)
    )

    run("aggregate_usage")

    assert watermark() == first + timedelta(hours=1)


def test_rebuild_recomputes_every_hour_since_the_date(org, make_event):
    received = timezone.now() - timedelta(days=10)
    for hours in (100, 50, 5):
        make_event(org, started_at=hours_ago(hours), received_at=received)
    run("aggregate_usage")
    # Rollups that went wrong (a bug, a manual edit): the watermark is past
    # these events, so an incremental pass does not look at them again.
    HourlyRollup.objects.update(cost_usd=Decimal("9"))
    stray = HourlyRollup.objects.create(org=org, hour=hours_ago(6), model="ghost", requests=1)
    run("aggregate_usage")
    assert HourlyRollup.objects.filter(cost_usd=Decimal("9")).count() == 3

    output = run(
        "aggregate_usage", "--rebuild", "--since", hours_ago(60).isoformat().replace("+00:00", "Z")
    )

    costs = {r.hour: r.cost_usd for r in HourlyRollup.objects.all()}
    assert costs == {
        hours_ago(100): Decimal("9"),  # before --since: left alone
        hours_ago(50): Decimal("0.001"),
        hours_ago(5): Decimal("0.001"),
    }
    assert not HourlyRollup.objects.filter(pk=stray.pk).exists()
    assert "Rebuilt 3 hours" in output


def test_rebuild_keeps_rollups_of_hours_whose_events_were_pruned(org, make_event):
    received = timezone.now() - timedelta(days=200)
    make_event(org, started_at=timezone.now() - timedelta(days=120), received_at=received)
    make_event(org, started_at=hours_ago(10), received_at=received)
    run("aggregate_usage")
    run("prune_events", "--older-than", "90d")
    assert RequestEvent.objects.count() == 1

    output = run("aggregate_usage", "--rebuild", "--since", "2000-01-01")

    assert HourlyRollup.objects.count() == 2
    assert "were pruned" in output


def test_rebuild_keeps_rollups_before_an_orgs_oldest_event(org, make_event):
    """Raw events deleted by other means than prune_events: the rollups are
    all that is left of them, so a rebuild must not wipe them."""
    received = timezone.now() - timedelta(days=20)
    gone = make_event(org, started_at=hours_ago(300), received_at=received)
    make_event(org, started_at=hours_ago(10), received_at=received)
    run("aggregate_usage")
    gone.delete()

    run("aggregate_usage", "--rebuild", "--since", "2000-01-01")

    assert HourlyRollup.objects.count() == 2


def test_late_event_in_a_pruned_hour_is_reported_and_left_out(org, make_event, no_lag):
    received = timezone.now() - timedelta(days=200)
    make_event(org, started_at=timezone.now() - timedelta(days=120), received_at=received)
    run("aggregate_usage")
    run("prune_events", "--older-than", "90d")
    before = rollups()

    make_event(org, started_at=timezone.now() - timedelta(days=120, minutes=1))
    output = run("aggregate_usage")

    assert rollups() == before
    assert "1 late events started in hours that were already pruned" in output


def test_progress_lines_on_long_rebuilds(org, make_event, monkeypatch, no_lag):
    for hours in range(1, 6):
        make_event(org, started_at=hours_ago(hours))
    assert "Aggregated 5 hours (5 events" in run("aggregate_usage")
    monkeypatch.setattr(Command, "progress_every", 0.0)

    output = run("aggregate_usage", "--rebuild", "--since", "2000-01-01", "--batch-size", "2")

    assert "  2/5 hours, 2 events," in output
    assert "  4/5 hours, 4 events," in output
    assert "events/s" in output
    assert "Rebuilt 5 hours (5 events" in output


@pytest.mark.parametrize(
    "args",
    [
        ["--rebuild"],
        ["--since", "2026-01-01"],
        ["--rebuild", "--since", "yesterday"],
        ["--rebuild", "--since", "2026-01-01", "--follow"],
        ["--follow", "--interval", "0"],
        ["--batch-size", "0"],
    ],
)
def test_bad_arguments_are_refused(args):
    with pytest.raises(CommandError):
        run("aggregate_usage", *args)


# --- --follow ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_follow_finishes_its_pass_and_exits_cleanly_on_a_signal(
    test_database_url, transactional_db, make_org, make_event, signum
):
    make_event(make_org(), started_at=hours_ago(1), received_at=hours_ago(1))
    process = start_manage(
        test_database_url,
        "aggregate_usage",
        "--follow",
        "--interval",
        "1",
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not HourlyRollup.objects.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no pass within 60 s"
            time.sleep(0.1)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, stderr
    assert f"Stopped on {signal.Signals(signum).name}; the last pass completed." in stdout
    assert "Traceback" not in stderr
    assert rollups() == raw_sums()


@pytest.mark.slow
def test_follow_does_not_sleep_out_its_interval_after_sigterm(test_database_url, transactional_db):
    process = start_manage(
        test_database_url,
        "aggregate_usage",
        "--follow",
        "--interval",
        "600",
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not AggregationState.objects.filter(name="aggregate_usage").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no pass within 60 s"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        stdout, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0
    assert time.monotonic() - started < 10
    assert "Stopped on SIGTERM" in stdout


def test_follow_carries_on_after_a_database_outage(monkeypatch):
    passes: list[int] = []

    def flaky_pass(self, *, since=None):
        passes.append(1)
        if len(passes) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        os.kill(os.getpid(), signal.SIGTERM)  # stop after this pass
        return RefreshReport()

    monkeypatch.setattr(Command, "run_pass", flaky_pass)
    out, err = io.StringIO(), io.StringIO()

    call_command("aggregate_usage", "--follow", "--interval", "0.01", stdout=out, stderr=err)

    assert len(passes) == 2
    assert "Pass failed (server closed the connection unexpectedly); retrying" in err.getvalue()
    assert "Stopped on SIGTERM" in out.getvalue()
