"""Shared fixtures: a real Tollgate server (the production command, one worker) on the test
database, and factories for organizations, keys and budgets.

Tests that talk to the server use `transactional_db`: the server runs in
another process and must see committed rows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from django.db import connection

from budgets.models import ApiKey, Budget, EndUser, Organization, Team
from budgets.services import api_key_create, organization_create
from config.server import server_command

BASE_DIR = Path(__file__).resolve().parent.parent


def database_url_of(settings_dict: dict) -> str:
    """A DATABASE_URL for the database Django is connected to (the test DB)."""
    user = quote(settings_dict["USER"] or "", safe="")
    password = quote(settings_dict["PASSWORD"] or "", safe="")
    auth = f"{user}:{password}@" if password else f"{user}@"
    host = settings_dict["HOST"] or ""
    port = f":{settings_dict['PORT']}" if settings_dict["PORT"] else ""
    socket_dir = settings_dict.get("OPTIONS", {}).get("host")
    url = f"postgresql://{auth}{host}{port}/{settings_dict['NAME']}"
    if socket_dir:
        url += f"?host={quote(socket_dir, safe='/')}"
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, url: str, process: subprocess.Popen, log_path: Path) -> None:
        self.url, self.process, self.log_path = url, process, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    database_url: str,
    tmp_dir: Path,
    # Clients on a loaded CI box may leave a connection idle for seconds.
    options: tuple[str, ...] = ("--timeout-keep-alive", "60"),
    **env_overrides: str,
) -> LiveServer:
    """The production command (config/server.py) on a free loopback port."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "API_KEY_CACHE_SECONDS": "1",
        # Tests read a summary right after changing what it shows;
        # tests/dashboard/test_summary_sharing.py tests the reuse window.
        "DASHBOARD_SUMMARY_MAX_AGE_MS": "0",
        "RESERVATION_SWEEP_SECONDS": "1",
        "BUDGET_DB_TIMEOUT_MS": "1000",
        "HOTPATH_POOL_MAX": "10",
        # The suite sends many bad keys from 127.0.0.1 on purpose; the throttle
        # has its own test server (tests/test_throttle.py).
        "API_AUTH_FAILURES_PER_MINUTE": "1000000",
        **env_overrides,
    }
    log_path = tmp_dir / f"server-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        server_command(f"127.0.0.1:{port}", "--log-level", "warning", *options),
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return LiveServer(url, process, log_path)
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start:\n{log_path.read_text()}")


def manage_env(database_url: str, **env: str) -> dict[str, str]:
    """Environment for a `manage.py` child on `database_url`, in this venv."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "TOLLGATE_NO_BOOTSTRAP": "1",
        "PYTHONUNBUFFERED": "1",
        **env,
    }


def start_manage(
    database_url: str, *args: str, stderr: int = subprocess.STDOUT, **env: str
) -> subprocess.Popen:
    """`manage.py ARGS` as a child process (for long-running commands)."""
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=manage_env(database_url, **env),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def run_manage(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`manage.py ARGS` run to completion in a child process."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=manage_env(database_url, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker) -> str:
    with django_db_blocker.unblock():
        return database_url_of(connection.settings_dict)


@pytest.fixture(scope="session")
def _server_backends_gone(test_database_url, django_db_blocker) -> Iterator[None]:
    """Last to be torn down: waits until every server's backends have exited."""
    yield
    with django_db_blocker.unblock():
        wait_for_other_sessions_to_end()


@pytest.fixture(scope="module")
def live_server_factory(
    test_database_url, tmp_path_factory, _server_backends_gone
) -> Iterator[Callable[..., LiveServer]]:
    """Servers with settings of their own, stopped when their module is done:
    each holds pooled connections, and PostgreSQL's default 100 clients do
    not fit every module's servers at once."""
    servers: list[LiveServer] = []

    def factory(**env: str) -> LiveServer:
        server = start_server(test_database_url, tmp_path_factory.mktemp("server"), **env)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        stop_server(server)


def wait_for_other_sessions_to_end(timeout: float = 10.0) -> None:
    """A stopped server's backends exit a moment after it does. The test
    database is dropped next, which PostgreSQL refuses while any remain."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)
        # Still there: say whose, so that the teardown warning that follows
        # ("being accessed by other users") can be traced to its test.
        cursor.execute(
            "SELECT application_name, state, backend_start, state_change, left(query, 120) "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        for session in cursor.fetchall():
            warnings.warn(f"session still open after the servers stopped: {session}", stacklevel=1)


@pytest.fixture(scope="session")
def server(test_database_url, tmp_path_factory, _server_backends_gone) -> Iterator[LiveServer]:
    """The server most tests share, with the test settings of start_server."""
    shared = start_server(test_database_url, tmp_path_factory.mktemp("server"))
    yield shared
    stop_server(shared)


@pytest.fixture
def api(server, transactional_db) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
def loopback_webhooks(settings) -> None:
    """Lets webhooks reach 127.0.0.0/8, where the tests' receivers listen:
    loopback is refused by default (budgets/webhooks.py), and a deployment
    whose receivers are private allows them the same way."""
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]


@pytest.fixture
def fake_dns(monkeypatch) -> dict[str, list[str]]:
    """Stands in for public DNS, which this machine cannot reach: a name put
    in the returned dict resolves to its addresses (in order), any other name
    goes to the system's resolver (/etc/hosts, IP literals)."""
    import socket

    from budgets import webhooks

    names: dict[str, list[str]] = {}
    system = webhooks.resolve

    def resolve(host: str, port: int):
        if host not in names:
            return system(host, port)
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, (a, port)) for a in names[host]]

    monkeypatch.setattr(webhooks, "resolve", resolve)
    return names


@pytest.fixture
def make_org(transactional_db) -> Callable[..., Organization]:
    counter = iter(range(1, 10_000))

    def factory(slug: str | None = None, **fields) -> Organization:
        return organization_create(slug=slug or f"org{next(counter)}", **fields)

    return factory


@pytest.fixture
def org(make_org) -> Organization:
    return make_org("acme")


@pytest.fixture
def make_key() -> Callable[..., str]:
    def factory(org: Organization, *, team: str | None = None, admin: bool = False) -> str:
        return api_key_create(org=org, team_slug=team, is_admin=admin)[1]

    return factory


@pytest.fixture
def key(org, make_key) -> str:
    return make_key(org)


@pytest.fixture
def admin_key(org, make_key) -> str:
    return make_key(org, admin=True)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def make_budget() -> Callable[..., Budget]:
    def factory(
        org: Organization,
        limit: str,
        *,
        scope: str = "org",
        team: str | None = None,
        user: str | None = None,
        key: ApiKey | None = None,
        period: str = "day",
        enforce: bool = True,
        soft_limit_pct: int = 80,
    ) -> Budget:
        team_obj = Team.objects.get_or_create(org=org, slug=team)[0] if team else None
        user_obj = EndUser.objects.get_or_create(org=org, external_id=user)[0] if user else None
        return Budget.objects.create(
            org=org,
            scope=scope,
            team=team_obj,
            user=user_obj,
            key=key,
            period=period,
            limit_usd=Decimal(limit),
            enforce=enforce,
            soft_limit_pct=soft_limit_pct,
        )

    return factory


def scrape_metrics(url: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics of the server at `url`: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    """One sample of a scrape_metrics() result (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict:
    """The response is API.md's one error shape with this status, code and field
    (`field` absent when no single field is at fault). Returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    if field is None:
        assert "field" not in error, error
    else:
        assert error.get("field") == field, error
    return error
