"""GET /v1/usage (API.md, "Reading"): spend, tokens and request counts of the
caller's organization, per hour or day (UTC days, or the local days of the
`time_zone` asked for), grouped by team, user and/or model.

A sync Django view (reporting is not the hot path): rollups for hours that are
aggregated, raw events for the rest, in one query (tracking/selectors.py).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.http import HttpResponse, JsonResponse, QueryDict, StreamingHttpResponse
from django.utils import timezone

from budgets.auth import ApiKeyInfo, authenticate
from budgets.models import validate_time_zone
from config.hotpath.errors import invalid
from config.hotpath.inputs import usd_text
from config.hotpath.views import ApiRequest, django_api_view, moment_param
from tracking.selectors import (
    GROUP_KEYS,
    UsageQuery,
    UsageRow,
    usage_columns,
    usage_rows,
    usage_rows_iter,
)
from tracking.services import hour_floor

logger = logging.getLogger(__name__)

DEFAULT_RANGE = timedelta(hours=24)
# An hourly answer for a year is ~9,000 periods per group: as far as one
# request should go.
MAX_RANGE = timedelta(days=366)
FORMATS = ("json", "csv")
GRANULARITIES = ("hour", "day")
CSV_CHUNK_ROWS = 500


api_get = django_api_view(authenticate=authenticate)


@api_get
def usage(request: ApiRequest) -> HttpResponse:
    query, fmt = usage_query(request.GET, request.api_key, now=timezone.now())
    if fmt == "csv":
        return _csv_response(query)
    response = JsonResponse(
        {
            "from": _iso(query.start),
            "to": _iso(query.end),
            "granularity": query.granularity,
            "time_zone": query.time_zone,
            "group_by": list(query.group_by),
            "rows": [_json_row(row) for row in usage_rows(query)],
        }
    )
    response["Cache-Control"] = "no-store"
    return response


# --- Parameters ---------------------------------------------------------------------


def usage_query(params: QueryDict, key: ApiKeyInfo, *, now: datetime) -> tuple[UsageQuery, str]:
    """The query asked for, or ApiError 422 naming the bad parameter.

    The range is widened to whole UTC hours (`from` down, `to` up), the finest
    grain the rollups have; the answer says which range it covers."""
    start, end = moment_param(params, "from"), moment_param(params, "to")
    try:
        end = _hour_ceil(end or now)
        start = hour_floor(start or end - DEFAULT_RANGE)
    except OverflowError:
        # Within an hour or a day of year 1 or 9999.
        raise invalid("to" if params.get("to") else "from", "The range is out of range.") from None
    if end <= start:
        raise invalid("to", "'to' must be after 'from'.")
    if end - start > MAX_RANGE:
        raise invalid("to", f"The range may span at most {MAX_RANGE.days} days.")
    return (
        UsageQuery(
            org_id=key.org_id,
            start=start,
            end=end,
            granularity=_choice(params, "granularity", GRANULARITIES),  # type: ignore[arg-type]
            group_by=_group_by(params),
            team=key.team_slug,
            time_zone=_time_zone(params),
        ),
        _choice(params, "format", FORMATS),
    )


def _choice(params: QueryDict, name: str, choices: tuple[str, ...]) -> str:
    value = params.get(name) or choices[0]
    if value not in choices:
        raise invalid(name, f"'{name}' must be one of {', '.join(choices)}.")
    return value


def _time_zone(params: QueryDict) -> str:
    name = params.get("time_zone") or "UTC"
    try:
        validate_time_zone(name)
    except ValidationError:
        raise invalid(
            "time_zone", "'time_zone' must be an IANA time zone name, such as America/New_York."
        ) from None
    return name


def _group_by(params: QueryDict) -> tuple[str, ...]:
    asked = {part.strip() for part in params.get("group_by", "").split(",") if part.strip()}
    unknown = asked - set(GROUP_KEYS)
    if unknown:
        raise invalid(
            "group_by",
            f"'group_by' takes a comma-separated list of {', '.join(GROUP_KEYS)} "
            f"(not {', '.join(sorted(unknown))}).",
        )
    return tuple(key for key in GROUP_KEYS if key in asked)


def _hour_ceil(at: datetime) -> datetime:
    floor = hour_floor(at)
    return floor if floor == at else floor + timedelta(hours=1)


# --- Answers ------------------------------------------------------------------------


def _iso(at: datetime) -> str:
    # Not strftime: its %Y writes year 1 as "1", not "0001".
    return at.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _json_row(row: UsageRow) -> dict[str, Any]:
    return {
        **row,
        "period_start": _iso(row["period_start"]),
        "cost_usd": usd_text(row["cost_usd"]),
    }


def csv_cell(value: Any) -> str:
    # Team and user ids come from gateway callers: a leading = + - @ would make
    # a spreadsheet run the cell as a formula (CSV injection), so it is quoted
    # the way spreadsheets understand.
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_values(row: UsageRow, columns: list[str]) -> list[str]:
    values: list[str] = []
    for column in columns:
        value = row[column]  # type: ignore[literal-required]
        if column == "period_start":
            values.append(_iso(value))
        elif column == "cost_usd":
            values.append(usd_text(value))
        elif value is None:
            values.append("")
        elif column in GROUP_KEYS:
            values.append(csv_cell(value))
        else:
            values.append(str(value))
    return values


def _csv_lines(query: UsageQuery) -> Iterator[str]:
    columns = usage_columns(query.group_by)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for count, row in enumerate(usage_rows_iter(query), start=1):
        writer.writerow(_csv_values(row, columns))
        if count % CSV_CHUNK_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


async def _from_request_thread(lines: Iterator[str]) -> AsyncIterator[str]:
    """Stream a sync iterator under ASGI.

    Django buffers a sync iterator whole before it sends anything under ASGI.
    Pulling each chunk through sync_to_async keeps the streaming, and
    thread_sensitive keeps every pull on the request's thread, where the
    database connection and its server-side cursor live."""
    pull = sync_to_async(next, thread_sensitive=True)
    while (chunk := await pull(lines, None)) is not None:
        yield chunk


def _csv_response(query: UsageQuery) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        _from_request_thread(_csv_lines(query)), content_type="text/csv; charset=utf-8"
    )
    name = f"usage-{query.start:%Y%m%dT%H}-{query.end:%Y%m%dT%H}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response
