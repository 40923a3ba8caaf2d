"""Factories for request events, inserted with the ORM as ingest would store them."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from budgets.models import EndUser, Organization, Team
from tracking.models import HourlyRollup, RequestEvent

_ids = itertools.count(1)


def hours_ago(hours: float, *, minutes: float = 0) -> datetime:
    """A moment `hours` (+ `minutes`) into the past of the current hour's start:
    hours_ago(3) is the start of the UTC hour three hours back."""
    hour = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour - timedelta(hours=hours) + timedelta(minutes=minutes)


@pytest.fixture
def no_lag(settings):
    """Passes of aggregate_usage take every event committed before them, as
    they would once the aggregation lag (two minutes) is over."""
    settings.AGGREGATION_LAG_SECONDS = 0


@pytest.fixture
def make_event() -> Callable[..., RequestEvent]:
    def factory(
        org: Organization,
        *,
        team: str | None = "search",
        user: str | None = "alice",
        model: str = "gpt-4o",
        provider: str = "openai",
        started_at: datetime | None = None,
        received_at: datetime | None = None,
        cost: str = "0.0010000000",
        priced: bool = True,
        status: str = "ok",
        input_tokens: int = 100,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        output_tokens: int = 50,
        reasoning_tokens: int = 0,
        tags: dict[str, str] | None = None,
    ) -> RequestEvent:
        started_at = started_at or timezone.now()
        return RequestEvent.objects.create(
            org=org,
            event_id=f"req_{next(_ids)}",
            team=Team.objects.get_or_create(org=org, slug=team)[0] if team else None,
            user=EndUser.objects.get_or_create(org=org, external_id=user)[0] if user else None,
            model=model,
            provider=provider,
            started_at=started_at,
            received_at=received_at or timezone.now(),
            input_tokens=input_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            output_tokens=output_tokens,
            reasoning_tokens=reasoning_tokens,
            cost_usd=Decimal(cost),
            priced=priced,
            status=status,
            tags=tags or {},
            payload_hash="0" * 64,
        )

    return factory


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


SUM_FIELDS = (
    "requests",
    "errors",
    "unpriced_requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
)


def rollups() -> dict[tuple, tuple]:
    """{(org, hour, team, user, model): (the sums)} of every rollup row."""
    return {
        (r.org_id, r.hour, r.team_id, r.user_id, r.model): tuple(getattr(r, f) for f in SUM_FIELDS)
        for r in HourlyRollup.objects.all()
    }


def raw_sums() -> dict[tuple, tuple]:
    """The same, computed in Python from the raw events."""
    sums: dict[tuple, list] = {}
    for e in RequestEvent.objects.all():
        hour = e.started_at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        row = sums.setdefault(
            (e.org_id, hour, e.team_id, e.user_id, e.model), [0, 0, 0, 0, 0, 0, 0, 0, Decimal(0)]
        )
        for i, value in enumerate(
            (
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
        ):
            row[i] += value
    return {key: tuple(values) for key, values in sums.items()}
