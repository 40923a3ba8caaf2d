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
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.http import HttpResponse, JsonResponse, QueryDict, StreamingHttpResponse
from django.utils import timezone

from budgets.auth import ApiKeyInfo, authenticate
from budgets.models import Organization, validate_time_zone
from config.hotpath.errors import invalid
from config.hotpath.inputs import usd_text
from config.hotpath.views import ApiRequest, django_api_view, moment_param
from tracking.selectors import (
    GROUP_KEYS,
    TAG_KEY,
    TAG_PREFIX,
    UsageQuery,
    UsageRow,
    month_bounds,
    tag_complete_from,
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
GRANULARITIES = ("hour", "day", "month")
CSV_CHUNK_ROWS = 500


api_get = django_api_view(authenticate=authenticate)


@api_get
def usage(request: ApiRequest) -> HttpResponse:
    query, fmt = usage_query(request.GET, request.api_key, now=timezone.now())
    if fmt == "csv":
        return csv_response(query)
    return json_response(query)


def json_response(query: UsageQuery) -> JsonResponse:
    body: dict[str, Any] = {
        "from": _iso(query.start),
        "to": _iso(query.end),
        "granularity": query.granularity,
        "time_zone": query.time_zone,
        "group_by": _group_names(query),
    }
    if query.tag is not None:
        body["tags_from"] = _iso(max(tag_complete_from(query.org_id, query.tag), query.start))
    body["rows"] = [_json_row(row) for row in usage_rows(query)]
    response = JsonResponse(body)
    response["Cache-Control"] = "no-store"
    return response


def _group_names(query: UsageQuery) -> list[str]:
    return [f"{TAG_PREFIX}{query.tag}" if key == TAG_KEY else key for key in query.group_by]


@api_get
def chargeback(request: ApiRequest) -> HttpResponse:
    """GET /v1/reports/chargeback?tag=NAME[&month=YYYY-MM][&format=csv|json]:
    a month (by default the last one, in the org's time zone) by team and
    value of a reported tag: requests, tokens and cost."""
    key: ApiKeyInfo = request.api_key
    org = Organization.objects.get(pk=key.org_id)
    query = chargeback_query(org, request.GET, team=key.team_slug, now=timezone.now())
    if _choice(request.GET, "format", ("csv", "json")) == "json":
        return json_response(query)
    return csv_response(query, chargeback_file_name(org, query))


# --- Parameters ---------------------------------------------------------------------

_MONTH = re.compile(r"(\d{4})-(\d{2})")
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def chargeback_query(
    org: Organization, params: QueryDict, *, team: str | None, now: datetime
) -> UsageQuery:
    """The chargeback report's query: one calendar month of the org's time
    zone (`month`, YYYY-MM; by default the last one), by team and the values
    of the reported tag `tag`. ApiError 422 naming the bad parameter.

    Its hours are the UTC hours that start in the month, the rule of the daily
    rollups: in a zone whose offset is not whole hours, the hour that straddles
    midnight counts in the month it starts in."""
    name = params.get("tag") or ""
    if not name:
        raise invalid("tag", "'tag' is required: the name of a tag this organization reports on.")
    tag = reported_tag(org.pk, name, field="tag")
    asked = params.get("month")
    if asked:
        match = _MONTH.fullmatch(asked)
        if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1971:
            raise invalid("month", "'month' must be a month as YYYY-MM, such as 2026-11.")
        start, end = month_bounds(org.time_zone, int(match.group(1)), int(match.group(2)))
    else:
        this_month, _ = month_bounds(org.time_zone, now=now)
        start, end = month_bounds(org.time_zone, now=this_month - timedelta(microseconds=1))
    return UsageQuery(
        org_id=org.pk,
        start=_hour_ceil(start),
        end=_hour_ceil(end),
        granularity="month",
        group_by=("team", TAG_KEY),
        team=team,
        time_zone=org.time_zone,
        tag=tag,
    )


def chargeback_file_name(org: Organization, query: UsageQuery) -> str:
    month = query.start.astimezone(ZoneInfo(query.time_zone))
    # Ids may hold quotes or non-ASCII letters, which a header cannot carry.
    stem = f"chargeback-{org.slug}-{query.tag}-{month:%Y-%m}"
    return f"{_UNSAFE_IN_FILE_NAME.sub('_', stem)}.csv"


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
    group_by, tag = _group_by(params, key.org_id)
    return (
        UsageQuery(
            org_id=key.org_id,
            start=start,
            end=end,
            granularity=_choice(params, "granularity", GRANULARITIES),  # type: ignore[arg-type]
            group_by=group_by,
            team=key.team_slug,
            time_zone=_time_zone(params),
            tag=tag,
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


def _group_by(params: QueryDict, org_id: int) -> tuple[tuple[str, ...], str | None]:
    """The group keys asked for, in column order, and the tag name of a
    `tag:NAME` among them (None: none)."""
    asked = {part.strip() for part in params.get("group_by", "").split(",") if part.strip()}
    tags = sorted(part[len(TAG_PREFIX) :] for part in asked if part.startswith(TAG_PREFIX))
    unknown = asked - set(GROUP_KEYS) - {TAG_PREFIX + name for name in tags}
    if unknown:
        raise invalid(
            "group_by",
            f"'group_by' takes a comma-separated list of {', '.join(GROUP_KEYS)} and "
            f"tag:NAME (not {', '.join(sorted(unknown))}).",
        )
    if not tags:
        return tuple(key for key in GROUP_KEYS if key in asked), None
    if len(tags) > 1:
        raise invalid("group_by", "'group_by' takes at most one tag:NAME.")
    if "user" in asked:
        # Tag rollups are kept per team and model, not per end user (their
        # rows would multiply by the users).
        raise invalid("group_by", "'group_by' cannot combine tag:NAME with user.")
    tag = reported_tag(org_id, tags[0], field="group_by")
    return tuple(key for key in ("team", TAG_KEY, "model") if key in asked or key == TAG_KEY), tag


def reported_tag(org_id: int, name: str, *, field: str) -> str:
    """`name` if the org reports on it, else ApiError 422 naming `field`."""
    reported = Organization.objects.filter(pk=org_id).values_list("report_tags", flat=True)
    if not name or name not in (reported.first() or []):
        raise invalid(
            field,
            f"The tag '{name[:64]}' is not one this organization reports on. An admin key "
            'marks it with PATCH /v1/org {"report_tags": [...]} (or Django admin); its '
            "usage is then built from the raw events still kept.",
        )
    return name


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
        elif column in GROUP_KEYS or column == TAG_KEY:
            values.append(csv_cell(value))
        else:
            values.append(str(value))
    return values


def _csv_lines(query: UsageQuery) -> Iterator[str]:
    columns = usage_columns(query.group_by)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    # The tag column is headed by its name (the JSON rows say "tag").
    writer.writerow([csv_cell(f"{TAG_PREFIX}{query.tag}") if c == TAG_KEY else c for c in columns])
    for count, row in enumerate(usage_rows_iter(query), start=1):
        writer.writerow(_csv_values(row, columns))
        if count % CSV_CHUNK_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_text(query: UsageQuery) -> str:
    """The CSV whole, for small answers (a month's chargeback report)."""
    return "".join(_csv_lines(query))


async def _from_request_thread(lines: Iterator[str]) -> AsyncIterator[str]:
    """Stream a sync iterator under ASGI.

    Django buffers a sync iterator whole before it sends anything under ASGI.
    Pulling each chunk through sync_to_async keeps the streaming, and
    thread_sensitive keeps every pull on the request's thread, where the
    database connection and its server-side cursor live."""
    pull = sync_to_async(next, thread_sensitive=True)
    while (chunk := await pull(lines, None)) is not None:
        yield chunk


def csv_response(query: UsageQuery, name: str | None = None) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        _from_request_thread(_csv_lines(query)), content_type="text/csv; charset=utf-8"
    )
    name = name or f"usage-{query.start:%Y%m%dT%H}-{query.end:%Y%m%dT%H}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response
