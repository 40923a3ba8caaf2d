"""GET /dashboard/export: what the dashboard page shows, for the signed-in
session, as JSON or CSV.

It runs the page's own two statements (dashboard_summary and
dashboard_breakdown, dashboard/sql/queries.sql) on Django's connection, so
the download holds exactly what the summary endpoint answers for the same
org and selection, and no second copy of that SQL exists.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connection, transaction

from budgets.models import Organization
from config.hotpath import db
from config.hotpath.errors import ApiError, JsonBody
from dashboard import selection
from dashboard.selection import Selection
from tracking.views import csv_cell

FORMATS = ("json", "csv")
CSV_COLUMNS = ("section", "subject", "at", "metric", "value")


def _json(value: Any) -> Any:
    # Django's psycopg setup leaves jsonb as text.
    return json.loads(value) if isinstance(value, str) else value


def summary(org: Organization, chosen: Selection) -> JsonBody:
    """The summary endpoint's body (without live updates) for `org` and the
    selection (range, custom dates, team, user, model, tag). Raises ApiError
    404 for a team or user the org does not have, 422 for a tag name it does
    not report on."""
    params = {"org_id": org.pk, "org_slug": None, **chosen.params(), "at": datetime.now(UTC)}
    # One transaction: both statements see the same org (REPEATABLE READ
    # would also give them one snapshot, which the page does not promise).
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(db.QUERIES["dashboard_summary"], params)
        row = cursor.fetchone()
        cursor.execute(db.QUERIES["dashboard_breakdown"], params)
        breakdown = cursor.fetchone()
        tags = None
        if chosen.group_tag is not None:
            cursor.execute(db.QUERIES["dashboard_tags"], params)
            tags = _json(cursor.fetchone()[1])
    if row is None or breakdown is None:
        raise ApiError(404, "not_found", "Unknown organization.", field="org")
    result, chart = _json(row[1]), _json(breakdown[1])
    if result["status"] == "not_found" or chart is None:
        field = result.get("field") or "team"
        if field == "tag":
            raise selection.unreported("tag", chosen.tag_name or "")
        name = chosen.params()[field]
        raise ApiError(404, "not_found", f"Unknown {field} '{name}'.", field=field)
    body = {**result["summary"], **chart}
    if chosen.group_tag is not None:
        if tags is None or tags.get("status") == "not_reported":
            raise selection.unreported("group_tag", chosen.group_tag)
        if tags.get("status") is None:  # not "by_user" nor "by_tag" (see dashboard/api.py)
            body["tag_breakdown"] = tags
    return body


def _scalars(item: JsonBody) -> Iterator[tuple[str, Any]]:
    for name, value in item.items():
        if not isinstance(value, dict | list):
            yield name, value


def csv_rows(body: JsonBody) -> Iterator[tuple[Any, ...]]:
    """The summary as long rows (section, subject, at, metric, value): one
    table a spreadsheet can pivot, whatever panel a value comes from."""
    for metric, value in _scalars(body["kpis"]):
        yield "kpi", "", "", metric, value
    for model in body["kpis"].get("unpriced_models", []):
        for metric, value in _scalars(model):
            if metric != "model":
                yield "unpriced_model", model["model"], "", metric, value
    chart = body["chart"]
    for series in chart["series"]:
        subject = "other" if series["other"] else (series["key"] or "")
        for bucket, value in zip(chart["buckets"], series["values"], strict=True):
            yield f"chart_{chart['split_by']}", subject, bucket, "spend_usd", value
    for kind, ranked in body["top"].items():
        for item in ranked:
            yield f"top_{kind}", item["id"] or "", "", "spend_usd", item["spend_usd"]
            yield f"top_{kind}", item["id"] or "", "", "requests", item["requests"]
    for budget in body["budgets"]:
        subject = f"{budget.get('scope')}:{budget.get('id') or ''}"
        for metric, value in _scalars(budget):
            if metric not in ("scope", "id"):
                yield "budget", subject, "", metric, value
    holds = body["holds"]
    yield "holds", "", "", "count", holds["count"]
    yield "holds", "", "", "held_usd", holds["held_usd"]
    listed = {hold["id"]: hold for hold in holds["largest"] + holds["newest"]}
    for hold in listed.values():
        for metric, value in _scalars(hold):
            if metric not in ("id", "created_at"):
                yield "hold", hold["id"], hold["created_at"], metric, value
    for request in body["recent"]:
        for metric, value in _scalars(request):
            if metric not in ("id", "started_at"):
                yield "recent", request["id"], request["started_at"], metric, value
    breakdown = body.get("tag_breakdown")
    for value in breakdown["values"] if breakdown else []:
        subject = "other" if value["other"] else (value["value"] or "")
        for metric in ("spend_usd", "requests"):
            yield f"tag_{breakdown['tag']}", subject, "", metric, value[metric]
    for alert in body["alerts"]:
        for metric, value in _scalars(alert):
            if metric not in ("id", "created_at"):
                yield "alert", alert["id"], alert.get("created_at") or "", metric, value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        return str(value)
    try:
        Decimal(value)  # an amount such as "-1.50" is data, not a formula
    except InvalidOperation:
        return csv_cell(value)
    return value


def csv_text(body: JsonBody) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in csv_rows(body):
        writer.writerow([_cell(value) for value in row])
    return buffer.getvalue()
