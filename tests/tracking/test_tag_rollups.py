"""Tag rollups (tracking_tagrollup): for each tag name an org reports on,
usage per (hour, tag value, team, model) equal to the raw events exactly,
through incremental passes, rebuilds and repricing; a newly marked name is
built from the raw events still kept, an unmarked one dropped."""

from __future__ import annotations

import random
from datetime import UTC
from decimal import Decimal

import pytest

from tests.tracking.conftest import SUM_FIELDS, hours_ago, run
from tests.tracking.test_reprice import make_price
from tracking.models import RequestEvent, TagRollup, TagRollupBuild
from tracking.services import events_reprice, rollups_refresh

pytestmark = pytest.mark.django_db

CUSTOMERS = ["acme", "globex", "=cmd|' /C calc'!A0", None]


def tag_rollups(name: str | None = None) -> dict[tuple, tuple]:
    rows = TagRollup.objects.all() if name is None else TagRollup.objects.filter(name=name)
    return {
        (r.org_id, r.hour, r.name, r.value, r.team_id, r.model): tuple(
            getattr(r, f) for f in SUM_FIELDS
        )
        for r in rows
    }


def raw_tag_sums(names_by_org: dict[int, list[str]], *, since=None) -> dict[tuple, tuple]:
    """The same, computed in Python from the raw events."""
    sums: dict[tuple, list] = {}
    for e in RequestEvent.objects.all():
        hour = e.started_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if since is not None and hour < since:
            continue
        for name in names_by_org.get(e.org_id, []):
            row = sums.setdefault(
                (e.org_id, hour, name, e.tags.get(name), e.team_id, e.model),
                [0, 0, 0, 0, 0, 0, 0, 0, Decimal(0)],
            )
            values = (
                1,
                int(e.status == "error"),
                int(not e.priced),
                e.input_tokens,
                e.cache_read_tokens,
                e.cache_write_tokens,
                e.output_tokens,
                e.reasoning_tokens,
                e.cost_usd,
            )
            for i, value in enumerate(values):
                row[i] += value
    return {key: tuple(values) for key, values in sums.items()}


def seed(make_event, orgs, rng: random.Random, count: int, hours: int = 48) -> None:
    for _ in range(count):
        tags = {}
        customer = rng.choice(CUSTOMERS)
        if customer is not None:
            tags["customer"] = customer
        if rng.random() < 0.5:
            tags["feature"] = rng.choice(["summarize", "chat"])
        make_event(
            rng.choice(orgs),
            team=rng.choice(["search", "support", None]),
            user=rng.choice(["alice", "bob"]),
            model=rng.choice(["gpt-4o", "claude-sonnet-4"]),
            started_at=hours_ago(rng.randrange(hours), minutes=rng.uniform(0, 59.99)),
            cost=str(Decimal(rng.randrange(10**12)) / 10**10),
            priced=rng.random() > 0.1,
            status="error" if rng.random() < 0.2 else "ok",
            input_tokens=rng.randrange(10**6),
            output_tokens=rng.randrange(10**5),
            reasoning_tokens=rng.randrange(10**4),
            tags=tags,
        )


def mark(org, *names: str) -> None:
    org.report_tags = list(names)
    org.save(update_fields=["report_tags"])


def test_tag_rollups_equal_raw_sums_through_passes_and_rebuilds(make_org, make_event, no_lag):
    rng = random.Random(11)
    tagged, other = make_org(), make_org()
    mark(tagged, "customer", "feature")
    seed(make_event, [tagged, other], rng, 200)

    report = rollups_refresh()

    assert report.tag_builds == 2
    names = {tagged.pk: ["customer", "feature"]}
    assert tag_rollups() == raw_tag_sums(names)
    assert TagRollup.objects.filter(org=other).count() == 0

    # Incremental: events received after the watermark, in old and new hours.
    seed(make_event, [tagged, other], rng, 100)
    report = rollups_refresh()
    assert report.tag_builds == 0 and report.tag_rows > 0
    assert tag_rollups() == raw_tag_sums(names)

    # Rows changed outside Tollgate are repaired by a rebuild.
    doomed = TagRollup.objects.filter(org=tagged).order_by("id").values_list("id", flat=True)[:5]
    TagRollup.objects.filter(id__in=list(doomed)).delete()
    TagRollup.objects.filter(org=tagged, name="feature").update(cost_usd=Decimal("1"))
    run("aggregate_usage", "--rebuild", "--since", (hours_ago(72)).isoformat())
    assert tag_rollups() == raw_tag_sums(names)


def test_each_name_sums_to_the_hourly_rollups(make_org, make_event, no_lag):
    rng = random.Random(5)
    org = make_org()
    mark(org, "customer")
    seed(make_event, [org], rng, 120)
    rollups_refresh()
    total = sum(RequestEvent.objects.filter(org=org).values_list("cost_usd", flat=True))
    tagged_total = sum(TagRollup.objects.filter(org=org).values_list("cost_usd", flat=True))
    assert tagged_total == total
    # Events without the tag are under a NULL value.
    untagged = sum(
        e.cost_usd for e in RequestEvent.objects.filter(org=org) if "customer" not in e.tags
    )
    assert untagged > 0
    assert (
        sum(TagRollup.objects.filter(org=org, value=None).values_list("cost_usd", flat=True))
        == untagged
    )


def test_a_newly_marked_name_is_built_from_the_events_kept(make_org, make_event, no_lag):
    rng = random.Random(3)
    org = make_org()
    seed(make_event, [org], rng, 150, hours=96)
    rollups_refresh()
    assert TagRollup.objects.count() == 0
    # Raw events older than two days go; their hours live on as hourly rollups only.
    run("prune_events", "--older-than", "2d")
    horizon = hours_ago(48)

    mark(org, "customer")
    report = rollups_refresh()

    assert report.tag_builds == 1
    build = TagRollupBuild.objects.get(org=org, name="customer")
    assert build.complete_from == horizon
    assert tag_rollups() == raw_tag_sums({org.pk: ["customer"]})
    assert not TagRollup.objects.filter(hour__lt=horizon).exists()


def test_an_unmarked_name_is_dropped_and_a_remarked_one_rebuilt(make_org, make_event, no_lag):
    rng = random.Random(9)
    org = make_org()
    mark(org, "customer", "feature")
    seed(make_event, [org], rng, 60)
    rollups_refresh()
    assert TagRollup.objects.filter(name="feature").exists()

    mark(org, "customer")
    assert rollups_refresh().tag_builds == 1
    assert not TagRollup.objects.filter(name="feature").exists()
    assert not TagRollupBuild.objects.filter(name="feature").exists()

    seed(make_event, [org], rng, 30)
    mark(org, "customer", "feature")
    rollups_refresh()
    assert tag_rollups() == raw_tag_sums({org.pk: ["customer", "feature"]})


def test_reprice_moves_the_difference_into_tag_rollups(make_org, make_event, no_lag):
    org = make_org()
    mark(org, "customer")
    make_event(
        org,
        model="new-model",
        provider="acme-ai",
        started_at=hours_ago(2),
        cost="0",
        priced=False,
        input_tokens=1000,
        output_tokens=0,
        tags={"customer": "acme"},
    )
    rollups_refresh()
    make_price()
    events_reprice(since=hours_ago(24))
    [row] = TagRollup.objects.filter(org=org, value="acme")
    assert row.cost_usd == Decimal("0.001") and row.unpriced_requests == 0
