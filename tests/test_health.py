from __future__ import annotations

import httpx


def test_healthz_needs_no_database(server):
    response = httpx.get(server.url + "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reaches_the_database_through_the_pool(server):
    response = httpx.get(server.url + "/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_readyz_reports_an_unreachable_database(live_server_factory):
    down = live_server_factory(
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", BUDGET_DB_TIMEOUT_MS="300"
    )
    response = httpx.get(down.url + "/readyz", timeout=5)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "store_unavailable"
    assert httpx.get(down.url + "/healthz").status_code == 200
