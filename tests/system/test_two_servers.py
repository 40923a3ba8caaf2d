"""Two server processes on one database keep the budget guarantees.

Each uvicorn process has its own pool, its own hold batcher and its own key
cache; only PostgreSQL (row locks in one transaction per call) stands between
their holds on the same budget windows.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest
from django.db.models import Sum

from budgets.models import BudgetWindow, Reservation
from tests.budgets.test_concurrency import _reserve_many
from tests.conftest import auth
from tracking.models import RequestEvent


@pytest.fixture(scope="module")
def two_servers(live_server_factory):
    # A generous time budget: this test is about invariants, and a loaded CI
    # box may answer a burst more slowly than the suite's usual 1 s.
    return (
        live_server_factory(BUDGET_DB_TIMEOUT_MS="10000"),
        live_server_factory(BUDGET_DB_TIMEOUT_MS="10000"),
    )


def _post_many(urls: list[str], key: str, calls: list[tuple[str, dict]], concurrency: int):
    """POST each (path, body), call i to urls[i % len(urls)], from `concurrency`
    threads; returns [(status, json)] in call order."""
    local = threading.local()

    def one(indexed: tuple[int, tuple[str, dict]]) -> tuple[int, dict]:
        i, (path, body) = indexed
        if not hasattr(local, "clients"):
            local.clients = [httpx.Client(base_url=url, timeout=30) for url in urls]
        response = local.clients[i % len(urls)].post(path, json=body, headers=auth(key))
        return response.status_code, response.json()

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, enumerate(calls)))


def _assert_window_invariants(window: BudgetWindow) -> None:
    window.refresh_from_db()
    active = Reservation.objects.filter(status="active", window_ids__contains=[window.id])
    assert window.reserved == (active.aggregate(s=Sum("amount"))["s"] or 0)
    assert window.spent == (RequestEvent.objects.aggregate(s=Sum("cost_usd"))["s"] or 0)
    assert window.reserved >= 0 and window.spent >= 0
    assert window.spent + window.reserved <= window.budget.limit_usd


def test_two_processes_never_exceed_the_limit_together(two_servers, org, key, make_budget):
    first, second = two_servers
    budget = make_budget(org, "5.00")
    bodies = [
        {"team": f"team{i % 7}", "user": f"user{i % 13}", "estimated_cost_usd": "0.01"}
        for i in range(1000)
    ]

    # Half the holds at each process, both bursts at the same time.
    with ThreadPoolExecutor(2) as both:
        runs = [
            both.submit(_reserve_many, server.url, key, bodies[n::2], 50)
            for n, server in enumerate(two_servers)
        ]
        statuses = sum((run.result() for run in runs), Counter())

    assert statuses == {201: 500, 402: 500}
    window = BudgetWindow.objects.get(budget=budget)
    _assert_window_invariants(window)
    assert window.reserved == Decimal("5.00")

    # Then releases, settlements and new holds, mixed, through both processes.
    held = [
        str(pk) for pk in Reservation.objects.filter(status="active").values_list("pk", flat=True)
    ]
    calls: list[tuple[str, dict]] = []
    for i, reservation_id in enumerate(held[:300]):
        if i % 2:
            calls.append((f"/v1/budget/reservations/{reservation_id}/release", {}))
        else:
            event = {"id": f"settle-{i}", "model": "m", "cost_usd": "0.005"}
            calls.append(("/v1/events", {**event, "reservation_id": reservation_id}))
        calls.append(("/v1/budget/reservations", {"team": "late", "estimated_cost_usd": "0.01"}))

    answers = _post_many([first.url, second.url], key, calls, concurrency=20)

    by_path: dict[str, list[tuple[int, dict]]] = {"release": [], "event": [], "hold": []}
    for (path, _), answer in zip(calls, answers, strict=True):
        kind = "release" if path.endswith("/release") else "event" if "events" in path else "hold"
        by_path[kind].append(answer)
    released, settled = by_path["release"], by_path["event"]
    late = Counter(status for status, _ in by_path["hold"])
    assert all(status == 200 and body["released"] for status, body in released)
    assert all(status in (200, 201) for status, _ in settled)
    assert set(late) <= {201, 402}
    # 150 releases free $1.50, 150 settlements $0.75: at most 225 late holds fit.
    assert late[201] <= 225
    _assert_window_invariants(window)
    assert window.spent == Decimal("0.75")
    assert window.reserved == Decimal("0.01") * (200 + late[201])
    assert Counter(Reservation.objects.values_list("status", flat=True)) == {
        "active": 200 + late[201],
        "released": 150,
        "settled": 150,
    }
