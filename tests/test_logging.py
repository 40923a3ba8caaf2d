"""Structured logs (LOG_FORMAT=json): one JSON object per line, the request id
on every line of a request, and no secret in any line.

Reads the real output of a server process and of a management command.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import psycopg
import pytest

from budgets.models import BudgetWindow
from tests.conftest import auth, run_manage

DB_PASSWORD = "db-Pa55word-never-logged"
USER_PASSWORD = "login-Pa55word-never-logged"


def _with_password(url: str) -> str:
    """The test database's URL with a password in it (the embedded server
    trusts local connections, so it is accepted and ignored)."""
    return re.sub(r"^postgresql://([^:@/]*)@", rf"postgresql://\1:{DB_PASSWORD}@", url)


def _json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


@pytest.fixture(scope="module")
def json_server(live_server_factory, test_database_url):
    assert DB_PASSWORD in _with_password(test_database_url)
    return live_server_factory(
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        BUDGET_DB_TIMEOUT_MS="300",
        DATABASE_URL=_with_password(test_database_url),
    )


def test_requests_log_json_lines_with_their_request_id_and_no_secrets(
    json_server, org, key, make_budget, test_database_url
):
    budget = make_budget(org, "10")
    with httpx.Client(base_url=json_server.url, timeout=10) as client:
        # A hold that cannot finish in time (its window is locked): the hot
        # path logs a warning about it.
        assert client.post(
            "/v1/budget/reservations", headers=auth(key), json={"estimated_cost_usd": "1"}
        ).is_success
        window = BudgetWindow.objects.get(budget=budget)
        with psycopg.connect(test_database_url) as conn:
            conn.execute("SELECT 1 FROM budgets_budgetwindow WHERE id = %s FOR UPDATE", [window.id])
            timed_out = client.post(
                "/v1/budget/reservations",
                headers={**auth(key), "X-Request-Id": "log-hotpath-1"},
                json={"estimated_cost_usd": "1"},
            )
            conn.rollback()
        # A Django page that does not exist: Django logs "Not Found".
        missing = client.get(
            "/no-such-page/", headers={**auth(key), "X-Request-Id": "log-django-1"}
        )
        # A failed sign-in, with its password in the form.
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        client.post(
            "/accounts/login/",
            data={"username": "nobody", "password": USER_PASSWORD, "csrfmiddlewaretoken": token},
        )
    assert timed_out.status_code == 503
    assert missing.status_code == 404
    time.sleep(0.5)  # let the server flush its log

    log = json_server.log()
    lines = _json_lines(log)
    hotpath = [line for line in lines if line.get("request_id") == "log-hotpath-1"]
    django = [line for line in lines if line.get("request_id") == "log-django-1"]
    assert hotpath and django, log
    warning = hotpath[0]
    assert warning["logger"] == "tollgate.api" and warning["level"] == "WARNING"
    assert warning["message"].startswith("store unavailable")
    assert set(warning) >= {"time", "level", "logger", "message", "request_id"}
    assert any(line["message"] == "Not Found: /no-such-page/" for line in django)
    # Lines outside a request have no request id field (not a made-up one).
    assert all(line.get("request_id") != "-" for line in lines)
    for secret in (key, DB_PASSWORD, USER_PASSWORD, "Bearer", "authorization"):
        assert secret not in log and secret.lower() not in log.lower(), secret


def test_worker_logs_json_lines_without_the_database_password(test_database_url, transactional_db):
    done = run_manage(_with_password(test_database_url), "run_worker", "--once", LOG_FORMAT="json")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = _json_lines(done.stderr)
    assert any(
        line["logger"] == "tollgate.worker" and line["message"].startswith("Worker started")
        for line in lines
    ), done.stderr
    assert DB_PASSWORD not in done.stdout + done.stderr


def test_text_format_keeps_the_request_id_on_every_line(server):
    """The default format (LOG_FORMAT=text) of the suite's shared server."""
    httpx.get(server.url + "/no-such-page/", headers={"X-Request-Id": "log-text-1"})
    time.sleep(0.3)
    line = next(line for line in server.log().splitlines() if "request_id=log-text-1" in line)
    assert "level=WARNING logger=django.request" in line
    assert "Not Found: /no-such-page/" in line
