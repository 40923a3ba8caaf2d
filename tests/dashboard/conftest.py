"""Fixtures of the dashboard tests: dashboard logins, their session cookies,
events recorded through the API, and rollups as aggregate_usage leaves them."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from budgets.models import Organization, Team
from dashboard.models import Membership
from tests.conftest import auth

PASSWORD = "a-long-test-password-8271"
SUMMARY = "/v1/dashboard/summary"

# Summary statements waiting on a lock (the summary tests hold them up with
# one on a table they read).
WAITING = """
    SELECT count(*) FROM pg_stat_activity
    WHERE wait_event_type = 'Lock' AND query LIKE '%%tollgate_dashboard_%%'
"""


def statements_waiting(conn: psycopg.Connection, expected: int) -> int:
    """The summary statements waiting on a lock, once `expected` of them are
    (or after 5 s, however many there are then)."""
    deadline = time.monotonic() + 5
    while True:
        count = conn.execute(WAITING).fetchone()[0]
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def fetch_summary(url: str, key: str, range_: str) -> httpx.Response:
    """One summary on a connection of its own (for requests sent from threads)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.get(SUMMARY, params={"range": range_}, headers=auth(key))


@pytest.fixture
def make_user(transactional_db) -> Callable[..., User]:
    def factory(
        username: str,
        *,
        org: Organization | None = None,
        staff: bool = False,
        role: str = Membership.Role.VIEWER,
        teams: tuple[str, ...] = (),
    ) -> User:
        user = User.objects.create_user(username, password=PASSWORD, is_staff=staff)
        if org is not None:
            membership = Membership.objects.create(user=user, org=org, role=role)
            for slug in teams:
                membership.teams.add(Team.objects.get_or_create(org=org, slug=slug)[0])
        return user

    return factory


def session_cookie(user: User) -> dict[str, str]:
    """A signed-in session of `user`, as the browser's cookie would carry it."""
    client = Client()
    client.force_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


def cookie_header(user: User) -> dict[str, str]:
    name, value = next(iter(session_cookie(user).items()))
    return {"Cookie": f"{name}={value}"}


def event(
    event_id: str,
    *,
    cost: str,
    started_at: datetime | None = None,
    team: str | None = "search",
    user: str | None = "alice",
    model: str = "gpt-4o",
    status: str = "ok",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event_id,
        "team": team,
        "user": user,
        "model": model,
        "usage": {"input_tokens": 100, "output_tokens": 20},
        "cost_usd": cost,
        "status": status,
        "latency_ms": 420,
        **extra,
    }
    if started_at is not None:
        body["started_at"] = started_at.isoformat()
    return {k: v for k, v in body.items() if v is not None}


def record(api: httpx.Client, key: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 1000):
        response = api.post(
            "/v1/events", json={"events": events[start : start + 1000]}, headers=auth(key)
        )
        assert response.status_code in (200, 201), response.text


def build_rollups() -> None:
    """Roll every raw event up into hourly rows and move the aggregation
    watermark to now, as `manage.py aggregate_usage` leaves the tables after a
    pass (written out here so that these tests do not depend on that command)."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM tracking_hourlyrollup")
        cursor.execute(
            """
            INSERT INTO tracking_hourlyrollup (
                org_id, hour, team_id, user_id, model, requests, errors, unpriced_requests,
                input_tokens, cache_read_tokens, cache_write_tokens, output_tokens,
                reasoning_tokens, cost_usd)
            SELECT org_id, date_trunc('hour', started_at, 'UTC'), team_id, user_id, model,
                   count(*), count(*) FILTER (WHERE status = 'error'),
                   count(*) FILTER (WHERE NOT priced), sum(input_tokens),
                   sum(cache_read_tokens), sum(cache_write_tokens), sum(output_tokens),
                   sum(reasoning_tokens), sum(cost_usd)
            FROM tracking_requestevent
            GROUP BY 1, 2, 3, 4, 5
            """
        )
        cursor.execute(
            """
            INSERT INTO tracking_aggregationstate (name, watermark, updated_at)
            VALUES ('aggregate_usage', now(), now())
            ON CONFLICT (name) DO UPDATE SET watermark = excluded.watermark
            """
        )
