"""The hot path through a real PgBouncer in transaction mode.

The server's pool connects through DATABASE_POOLER_URL; PgBouncer has fewer
server connections (3) than the server has clients (20), so consecutive
transactions of one client connection land on different server sessions.
Anything that relied on session state (prepared statements, SET, temp tables,
advisory locks) would fail here. Skips without pgbouncer on a laptop; fails
when CI is set.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest

from budgets.models import BudgetWindow, Reservation
from tests.budgets.test_concurrency import _reserve_many
from tests.conftest import auth, free_port
from tracking.models import RequestEvent

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
SERVER_CONNECTIONS = 3


def _require_pgbouncer() -> None:
    if os.path.exists(PGBOUNCER):
        return
    if os.environ.get("CI"):
        pytest.fail(
            "pgbouncer is not installed; .ci/run must install it (apt-get install pgbouncer)"
        )
    pytest.skip("pgbouncer is not installed")


@pytest.fixture(scope="module")
def pgbouncer(django_db_setup, django_db_blocker):
    _require_pgbouncer()
    from django.db import connection

    with django_db_blocker.unblock():
        settings_dict = connection.settings_dict
    socket_dir = settings_dict.get("OPTIONS", {}).get("host")
    host = socket_dir or settings_dict["HOST"] or "127.0.0.1"
    port = settings_dict["PORT"] or 5432
    user = settings_dict["USER"] or "postgres"
    password = settings_dict["PASSWORD"] or ""
    # Its own directory directly in /tmp: pytest's tmp dirs are private to
    # root, and PgBouncer runs as another user.
    workdir = Path(tempfile.mkdtemp(prefix="tollgate-pgbouncer-"))
    workdir.chmod(0o777)
    listen = free_port()
    (workdir / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    (workdir / "pgbouncer.ini").write_text(f"""
[databases]
* = host={host} port={port} user={user} {f"password={password}" if password else ""}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/userlist.txt
admin_users = {user}
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
max_client_conn = 500
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
""")
    command = [PGBOUNCER, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root; the embedded server's own user can
        # reach its unix socket.
        runas = "pgserver" if _user_exists("pgserver") else "nobody"
        command[1:1] = ["-u", runas]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"postgresql://{user}@127.0.0.1:{listen}/{settings_dict['NAME']}"
    _wait_for(url, process, workdir)
    yield {
        "url": url,
        "admin_url": f"postgresql://{user}@127.0.0.1:{listen}/pgbouncer",
        "log": workdir / "pgbouncer.log",
    }
    process.terminate()
    process.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _wait_for(url: str, process: subprocess.Popen, workdir: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = workdir / "pgbouncer.log"
            raise RuntimeError(
                f"pgbouncer exited: {process.stdout.read().decode()}"
                f"{log.read_text() if log.exists() else ''}"
            )
        try:
            with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            time.sleep(0.2)
    raise RuntimeError("pgbouncer did not accept connections")


@pytest.fixture(scope="module")
def pooled_server(pgbouncer, live_server_factory):
    return live_server_factory(
        DATABASE_POOLER_URL=pgbouncer["url"], HOTPATH_POOL_MAX="20", HOTPATH_POOL_MIN="5"
    )


def _transactions(pgbouncer) -> int:
    with psycopg.connect(pgbouncer["admin_url"], autocommit=True, prepare_threshold=None) as conn:
        rows = conn.execute("SHOW STATS").fetchall()
    return sum(row[1] for row in rows)  # total_xact_count per database


def test_hot_path_through_pgbouncer_transaction_mode(
    pooled_server, pgbouncer, org, key, admin_key, make_budget
):
    before = _transactions(pgbouncer)
    make_budget(org, "5.00")
    with httpx.Client(base_url=pooled_server.url, timeout=10) as api:
        put = api.put(
            "/v1/budgets/team/search/day", json={"limit_usd": "2"}, headers=auth(admin_key)
        )
        check = api.post(
            "/v1/budget/check",
            json={"team": "search", "estimated_cost_usd": "1"},
            headers=auth(key),
        )
        held = api.post(
            "/v1/budget/reservations",
            headers=auth(key),
            json={"team": "search", "user": "alice", "estimated_cost_usd": "0.5"},
        )
        released = api.post(
            f"/v1/budget/reservations/{held.json()['reservation_id']}/release", headers=auth(key)
        )
        settle_hold = api.post(
            "/v1/budget/reservations",
            headers=auth(key),
            json={"team": "search", "estimated_cost_usd": "0.2"},
        )
        events = api.post(
            "/v1/events",
            headers=auth(key),
            json={
                "events": [
                    {
                        "id": f"pgb-{i}",
                        "team": "search",
                        "model": "m",
                        "cost_usd": "0.01",
                        "reservation_id": settle_hold.json()["reservation_id"] if i == 0 else None,
                    }
                    for i in range(50)
                ]
            },
        )
        status = api.get("/v1/budget/status", params={"team": "search"}, headers=auth(key))
        # The dashboard's summary: two statements at once on two pooled connections.
        summaries = [
            api.get("/v1/dashboard/summary", params={"range": r}, headers=auth(key))
            for r in ("24h", "7d", "30d", "mtd")
        ]

    assert put.status_code == 200
    assert check.status_code == 200 and check.json()["allowed"] is True
    assert held.status_code == 201
    assert released.status_code == 200 and released.json()["released"] is True
    assert events.status_code == 201, events.text
    assert status.status_code == 200
    budgets = {b["scope"]: b for b in status.json()["budgets"]}
    assert budgets["team"]["spent_usd"] == "0.5" and budgets["team"]["reserved_usd"] == "0"
    assert RequestEvent.objects.count() == 50
    assert Reservation.objects.get(pk=settle_hold.json()["reservation_id"]).status == "settled"
    for summary in summaries:
        assert summary.status_code == 200, summary.text
        assert summary.json()["kpis"]["requests"] == 50
        assert summary.json()["recent"][0]["id"].startswith("pgb-")
    # The traffic really went through PgBouncer.
    assert _transactions(pgbouncer) - before >= 8
    assert "prepared statement" not in pooled_server.log()
    assert "prepared statement" not in pgbouncer["log"].read_text()


def test_concurrent_holds_through_pgbouncer_never_exceed_limit(
    pooled_server, org, key, make_budget
):
    budget = make_budget(org, "5.00")
    bodies = [
        {"team": f"t{i % 5}", "user": f"u{i % 11}", "estimated_cost_usd": "0.01"}
        for i in range(1000)
    ]

    statuses = _reserve_many(pooled_server.url, key, bodies, concurrency=60)

    assert statuses == {201: 500, 402: 500}
    window = BudgetWindow.objects.get(budget=budget)
    assert window.spent + window.reserved == Decimal("5.00")
