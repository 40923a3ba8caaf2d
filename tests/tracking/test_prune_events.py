"""manage.py prune_events: raw events go in batches, their usage stays in the
rollups, and nothing goes that the rollups do not have yet."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.core.management import CommandError
from django.utils import timezone

from tests.tracking.conftest import rollups, run
from tracking.management.commands.prune_events import Command
from tracking.models import AggregationState, HourlyRollup, RequestEvent

# Passes take the events just made.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_lag")]


def days_ago(days: float):
    return timezone.now() - timedelta(days=days)


@pytest.fixture
def history(org, make_event):
    """25 events of four months ago, 3 of yesterday, all aggregated."""
    for i in range(25):
        make_event(
            org, started_at=days_ago(120) + timedelta(hours=i % 5), received_at=days_ago(119)
        )
    for _ in range(3):
        make_event(org, started_at=days_ago(1), received_at=days_ago(1))
    run("aggregate_usage")
    return org


def test_prune_deletes_old_events_in_batches_and_rollups_stay(history, monkeypatch):
    before = rollups()
    monkeypatch.setattr(Command, "progress_every", 0.0)

    output = run("prune_events", "--older-than", "90d", "--batch-size", "10")

    assert RequestEvent.objects.count() == 3
    assert all(e.started_at > days_ago(2) for e in RequestEvent.objects.all())
    assert rollups() == before
    assert "Deleting 25 events that started before" in output
    assert "  10/25 events deleted" in output and "  20/25 events deleted" in output
    assert "Deleted 25 events" in output


def test_prune_records_its_horizon_on_a_whole_hour(history):
    run("prune_events", "--older-than", "90d")

    horizon = AggregationState.objects.get(name="prune_events").watermark
    assert horizon == horizon.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    assert days_ago(90) - timedelta(hours=1) < horizon <= days_ago(90)


def test_cutoff_is_rounded_down_to_the_hour(org, make_event):
    """An hour is pruned whole or not at all, so its rollup and its raw events
    never disagree."""
    cutoff = (timezone.now() - timedelta(hours=36)).replace(minute=0, second=0, microsecond=0)
    kept = make_event(org, started_at=cutoff, received_at=days_ago(3))
    gone = make_event(org, started_at=cutoff - timedelta(seconds=1), received_at=days_ago(3))
    run("aggregate_usage")

    run("prune_events", "--older-than", "36h")

    assert list(RequestEvent.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not RequestEvent.objects.filter(pk=gone.pk).exists()


def test_refuses_when_the_rollups_have_not_caught_up(org, make_event):
    make_event(org, started_at=days_ago(120), received_at=days_ago(1))

    with pytest.raises(
        CommandError, match=r"1 of these events are not in the hourly rollups.*aggregate_usage"
    ):
        run("prune_events", "--older-than", "90d")

    assert RequestEvent.objects.count() == 1
    assert not AggregationState.objects.filter(name="prune_events").exists()


def test_refuses_for_a_late_event_that_arrived_after_the_last_aggregation(history, make_event):
    make_event(history, started_at=days_ago(100))

    with pytest.raises(CommandError, match="aggregate_usage"):
        run("prune_events", "--older-than", "90d")

    assert RequestEvent.objects.count() == 29


def test_late_events_in_already_pruned_hours_do_not_block_the_next_prune(history, make_event):
    run("prune_events", "--older-than", "90d")
    # Arrives after its hour was pruned: aggregate_usage leaves it out.
    make_event(history, started_at=days_ago(120))
    run("aggregate_usage")

    output = run("prune_events", "--older-than", "90d")

    assert "Deleted 1 events" in output
    assert RequestEvent.objects.count() == 3


def test_dry_run_only_counts(history):
    output = run("prune_events", "--older-than", "90d", "--dry-run")

    assert "Would delete 25 events that started before" in output
    assert RequestEvent.objects.count() == 28


def test_dry_run_says_when_the_rollups_are_behind(org, make_event):
    make_event(org, started_at=days_ago(120))

    output = run("prune_events", "--older-than", "90d", "--dry-run")

    assert "Would delete 1 events" in output and "aggregate_usage" in output


def test_nothing_to_prune(org, make_event):
    make_event(org, started_at=days_ago(1))

    output = run("prune_events", "--older-than", "90d")

    assert "nothing to delete" in output
    assert RequestEvent.objects.count() == 1


def test_rollups_of_pruned_hours_survive_the_next_aggregation(history, make_event):
    run("prune_events", "--older-than", "90d")
    make_event(history, started_at=days_ago(0.5))

    run("aggregate_usage")

    assert HourlyRollup.objects.filter(hour__lt=days_ago(90)).count() == 5
    assert sum(r.requests for r in HourlyRollup.objects.all()) == 29


@pytest.mark.parametrize("age", ["90", "0d", "-1d", "90m", "d", "1e3d", "99999999999d"])
def test_bad_ages_are_refused(age):
    with pytest.raises(CommandError, match="older"):
        run("prune_events", "--older-than", age)


def test_older_than_is_required():
    with pytest.raises(CommandError):
        run("prune_events")
