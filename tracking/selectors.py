"""Reads of the tracking app for reports and jobs (sync, Django's connection).

The SQL lives in tracking/sql/queries.sql as named blocks; this module and
tracking/services.py run it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from django.db import connection

from config.hotpath.db import load_queries

QUERIES = load_queries(Path(__file__).resolve().parent / "sql" / "queries.sql")

# Rows of tracking_aggregationstate.
AGGREGATION_JOB = "aggregate_usage"
PRUNE_JOB = "prune_events"

# Before any watermark: every event is new.
BEGINNING = datetime(1, 1, 1, tzinfo=UTC)

GROUP_KEYS = ("team", "user", "model")
# group_by=tag:NAME: the values of one tag name the org reports on.
TAG_KEY = "tag"
TAG_PREFIX = "tag:"
Granularity = Literal["hour", "day", "month"]


def run(name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Run a named query and return its rows (none for a statement without)."""
    with connection.cursor() as cursor:
        cursor.execute(QUERIES[name], params or {})
        return cursor.fetchall() if cursor.description else []


@dataclass(frozen=True)
class PricesInForce:
    """The price catalog as the last load left it (load_prices --check, the dashboard)."""

    file: str | None  # the price map load_prices read last; None: never loaded by it
    loaded_at: datetime | None
    newest_change: datetime | None  # the latest effective_from already in effect
    models: int


def prices_in_force() -> PricesInForce:
    [(file, loaded_at, newest, models)] = run("price_map_in_force")
    return PricesInForce(file, loaded_at, newest, models)


def job_watermark(name: str) -> datetime | None:
    rows = run("job_watermark", {"name": name})
    return rows[0][0] if rows else None


def database_now() -> datetime:
    return run("statement_time")[0][0]


@dataclass(frozen=True)
class UsageQuery:
    org_id: int
    start: datetime
    end: datetime
    granularity: Granularity = "hour"
    group_by: tuple[str, ...] = ()
    # Set for a team-limited API key: only this team's usage.
    team: str | None = None
    # Days are the local days of this zone, each starting at the first instant
    # of its date (hours stay UTC hours).
    time_zone: str = "UTC"
    # group_by=tag:NAME: this name (then "tag" is in group_by, "user" is not).
    tag: str | None = None

    @property
    def query_name(self) -> str:
        return "usage" if self.tag is None else "usage_by_tag"

    def params(self) -> dict[str, Any]:
        tag_params = {}
        if self.tag is not None:
            built = run("tag_build", {"org_id": self.org_id, "tag": self.tag})
            tag_params = {
                "tag": self.tag,
                # See the query's comment: a name not built yet is read raw.
                "tail_after": (job_watermark(AGGREGATION_JOB) or BEGINNING) if built else BEGINNING,
            }
        return {
            **tag_params,
            # See the query's comment: read first, in a statement of its own.
            "aggregated_through": job_watermark(AGGREGATION_JOB) or BEGINNING,
            "org_id": self.org_id,
            "from": self.start,
            "to": self.end,
            "granularity": self.granularity,
            "time_zone": self.time_zone,
            "team": self.team,
            "by_team": "team" in self.group_by,
            "by_user": "user" in self.group_by,
            "by_model": "model" in self.group_by,
        }


class UsageRow(TypedDict):
    period_start: datetime
    team: NotRequired[str | None]
    user: NotRequired[str | None]
    tag: NotRequired[str | None]  # NULL: the events lack the tag
    model: NotRequired[str]
    requests: int
    errors: int
    unpriced_requests: int
    input_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal


USAGE_COLUMNS = (
    "period_start",
    "team",
    "user",
    "tag",
    "model",
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


_GROUPABLE = (*GROUP_KEYS, TAG_KEY)


def usage_columns(group_by: tuple[str, ...]) -> list[str]:
    """The columns of a usage row: the group keys asked for, then the sums."""
    return [c for c in USAGE_COLUMNS if c not in _GROUPABLE or c in group_by]


def _usage_row(values: tuple[Any, ...], query: UsageQuery) -> UsageRow:
    # "usage" has a user column and no tag column, "usage_by_tag" the reverse.
    names = [c for c in USAGE_COLUMNS if c != ("user" if query.tag is not None else TAG_KEY)]
    row = dict(zip(names, values, strict=True))
    for key in _GROUPABLE:
        if key not in query.group_by:
            row.pop(key, None)
    return row  # type: ignore[return-value]


def usage_rows(query: UsageQuery) -> list[UsageRow]:
    return [_usage_row(values, query) for values in run(query.query_name, query.params())]


def usage_rows_iter(query: UsageQuery, *, chunk_size: int = 2000) -> Iterator[UsageRow]:
    """Usage rows one by one from a server-side cursor, for streamed answers."""
    params = query.params()
    with connection.chunked_cursor() as cursor:
        cursor.execute(QUERIES[query.query_name], params)
        while chunk := cursor.fetchmany(chunk_size):
            for values in chunk:
                yield _usage_row(values, query)


def month_bounds(
    time_zone: str,
    year: int | None = None,
    month: int | None = None,
    *,
    now: datetime | None = None,
) -> tuple[datetime, datetime]:
    """Start and end of a calendar month of `time_zone` (the one of `year` and
    `month`, else the one containing `now`), as budget windows bound it."""
    at = now if year is None else datetime(year, month or 1, 15, 12, tzinfo=UTC)
    [(start, end)] = run("month_bounds", {"time_zone": time_zone, "at": at})
    return start, end


def tag_complete_from(org_id: int, tag: str) -> datetime:
    """The first hour whose usage the tag rollups of `tag` split by value;
    earlier hours (pruned before the name was built) count under null."""
    built = run("tag_build", {"org_id": org_id, "tag": tag})
    return built[0][0] if built else job_watermark(PRUNE_JOB) or BEGINNING
