"""A database outage under steady load: answers stay fast and honest, the
service recovers by itself, and no acknowledged event is lost or doubled.

Runs against its own embedded PostgreSQL cluster (the suite's database must
stay up), which the test stops for a few seconds and starts again.
"""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import pytest

from tests.clusters import cluster
from tests.conftest import auth, run_manage, start_server, stop_server

TIMEOUT_MS = 500
OUTAGE_SECONDS = 3.0


def _manage(url: str, *args: str) -> str:
    done = run_manage(url, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def outage_cluster():
    with cluster("outage") as pg:
        url = pg.create_database("outage")
        _manage(url, "migrate", "--verbosity", "0")
        _manage(url, "create_org", "outage")
        key = _manage(url, "create_api_key", "--org", "outage").strip().splitlines()[-1]
        yield pg, url, key


def test_outage_and_recovery_lose_nothing(outage_cluster, tmp_path):
    pg, url, key = outage_cluster
    live = start_server(
        url,
        tmp_path,
        BUDGET_DB_TIMEOUT_MS=str(TIMEOUT_MS),
        HOTPATH_POOL_TIMEOUT="0.5",
        HOTPATH_POOL_MAX="4",
    )
    acknowledged: list[str] = []
    unavailable = 0
    slowest = 0.0
    lock = threading.Lock()
    stop_at = time.monotonic() + 14

    def client(n: int) -> None:
        nonlocal unavailable, slowest
        with httpx.Client(base_url=live.url, timeout=10) as api:
            i = 0
            while time.monotonic() < stop_at:
                event = {"id": f"c{n}-{i}", "model": "m", "cost_usd": "0.01"}
                while True:  # retry the same id until it is acknowledged
                    started = time.monotonic()
                    try:
                        response = api.post("/v1/events", json=event, headers=auth(key))
                    except httpx.TransportError:
                        response = None
                    took = time.monotonic() - started
                    with lock:
                        slowest = max(slowest, took)
                    if response is not None and response.status_code in (200, 201):
                        with lock:
                            acknowledged.append(event["id"])
                        break
                    assert response is None or response.status_code == 503, response.text
                    assert response is None or (
                        response.json()["error"]["code"] == "store_unavailable"
                    )
                    with lock:
                        unavailable += 1
                    time.sleep(0.05)
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(3)
        pg.stop()
        time.sleep(0.5)
        probe_started = time.monotonic()
        reserve = httpx.post(
            live.url + "/v1/budget/reservations",
            headers=auth(key),
            json={"estimated_cost_usd": "0.01"},
            timeout=10,
        )
        probe_took = time.monotonic() - probe_started
        time.sleep(OUTAGE_SECONDS - 0.5)
        pg.start()
        restarted = time.monotonic()
        while httpx.get(live.url + "/readyz", timeout=5).status_code != 200:
            assert time.monotonic() - restarted < 5, "not ready 5 s after the restart"
            time.sleep(0.1)
        recovered_in = time.monotonic() - restarted
        for t in threads:
            t.join(timeout=60)
    finally:
        stop_server(live)

    assert reserve.status_code == 503  # fail closed, in time
    assert reserve.json()["error"]["code"] == "store_unavailable"
    assert probe_took < TIMEOUT_MS / 1000 + 1.0
    assert unavailable > 0, "the outage was not seen"
    assert recovered_in < 5
    # Answers never waited much past the time budget.
    assert slowest < TIMEOUT_MS / 1000 + 1.5
    # Every acknowledged event is stored exactly once; nothing else is.
    with psycopg.connect(url) as conn:
        stored = [r[0] for r in conn.execute("SELECT event_id FROM tracking_requestevent")]
    assert sorted(stored) == sorted(acknowledged)
    assert len(set(acknowledged)) == len(acknowledged) > 50
    print(
        f"\noutage: {len(acknowledged)} events acknowledged and stored once, "
        f"{unavailable} 503s, ready {recovered_in:.2f} s after restart, "
        f"slowest answer {slowest * 1000:.0f} ms"
    )
