"""The comparison's baselines make the hot path's decision: concurrent holds
never take a budget past its limit, and a refused hold leaves nothing behind
(the async-ORM view gives back the windows it already held)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone

from budgets.models import BudgetWindow, Reservation
from loadtests.baselines.sync_views import period_bounds
from tests.conftest import BASE_DIR, auth, free_port

SERVERS = {
    "sync": lambda port: [
        "gunicorn",
        "loadtests.baselines.sync_wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        "gthread",
        "--threads",
        "8",
    ],
    "async": lambda port: [
        "uvicorn",
        "loadtests.baselines.async_asgi:application",
        "--port",
        str(port),
        "--timeout-keep-alive",
        "60",
    ],
}
SETTINGS = {
    "sync": "loadtests.baselines.sync_settings",
    "async": "loadtests.baselines.async_settings",
}


@pytest.fixture(params=sorted(SERVERS))
def baseline(request, test_database_url, tmp_path) -> Iterator[str]:
    """A running baseline server on the test database; yields its URL."""
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", *SERVERS[request.param](port)],
            cwd=BASE_DIR,
            env={
                **os.environ,
                "DATABASE_URL": test_database_url,
                "DJANGO_SETTINGS_MODULE": SETTINGS[request.param],
                "LOG_LEVEL": "WARNING",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_concurrent_holds_never_exceed_limit_and_refusals_leave_nothing(
    baseline, make_org, make_key, make_budget
):
    org = make_org("bench")
    key = make_key(org)
    org_budget = make_budget(org, "100")
    team_budget = make_budget(org, "0.50", scope="team", team="team-a")
    # The org window first (lower id), so every hold takes it before the team
    # window refuses: the async view must give the org hold back.
    now = timezone.now()
    windows = {}
    for budget in (org_budget, team_budget):
        start, end = period_bounds(budget.period, org.time_zone, now)
        windows[budget.scope] = BudgetWindow.objects.create(
            budget=budget, period_start=start, period_end=end
        )

    def hold(_: int) -> int:
        with httpx.Client(timeout=30) as client:
            return client.post(
                f"{baseline}/v1/budget/reservations",
                json={"team": "team-a", "user": "u1", "estimated_cost_usd": "0.05"},
                headers=auth(key),
            ).status_code

    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = Counter(pool.map(hold, range(30)))

    assert statuses == {201: 10, 402: 20}
    for window in windows.values():
        window.refresh_from_db()
    assert windows["team"].reserved == Decimal("0.50")
    assert windows["org"].reserved == Decimal("0.50")
    assert Reservation.objects.filter(org=org).count() == 10
