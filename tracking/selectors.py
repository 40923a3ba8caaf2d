"""Reads of the tracking app for jobs (sync, Django's connection).

The SQL lives in tracking/sql/queries.sql as named blocks; this module and
tracking/services.py run it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db import connection

from budgets.db import load_queries

QUERIES = load_queries(Path(__file__).resolve().parent / "sql" / "queries.sql")

# Rows of tracking_aggregationstate.
AGGREGATION_JOB = "aggregate_usage"
PRUNE_JOB = "prune_events"

# Before any watermark: every event is new.
BEGINNING = datetime(1, 1, 1, tzinfo=UTC)


def run(name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Run a named query and return its rows (none for a statement without)."""
    with connection.cursor() as cursor:
        cursor.execute(QUERIES[name], params or {})
        return cursor.fetchall() if cursor.description else []


def job_watermark(name: str) -> datetime | None:
    rows = run("job_watermark", {"name": name})
    return rows[0][0] if rows else None


def database_now() -> datetime:
    return run("statement_time")[0][0]
