"""One database round trip per hot-path request, counted on the wire.

The server talks to PostgreSQL through the slow-database proxy of
loadtests/harness/slowdb.py (with no delay), which counts round trips. A pool that
checked every connection before lending it would double them.
"""

from __future__ import annotations

import httpx
import pytest
from django.db import connection

from loadtests.harness.slowdb import DelayProxy, socket_path
from tests.conftest import auth, free_port, start_server, stop_server


@pytest.fixture
def proxied_server(test_database_url, transactional_db, tmp_path):
    params = connection.get_connection_params()
    proxy = DelayProxy(free_port(), socket_path(params), delay_ms=0)
    proxy.start()
    user = connection.settings_dict["USER"] or "postgres"
    url = (
        f"postgresql://{user}@127.0.0.1:{proxy.port}/{connection.settings_dict['NAME']}"
        "?sslmode=disable"
    )
    # Keys stay cached for the whole test (a cold key costs its own lookup),
    # and the reservation sweeper stays out of the count.
    live = start_server(
        url,
        tmp_path,
        API_KEY_CACHE_SECONDS="300",
        RESERVATION_SWEEP_SECONDS="3600",
        HOTPATH_POOL_MAX="2",
    )
    yield live, proxy
    stop_server(live)
    proxy.stop()


def test_warm_requests_cost_one_round_trip_each(proxied_server, make_org, make_key, make_budget):
    live, proxy = proxied_server
    org = make_org("trips")
    make_budget(org, "100.00")
    key = make_key(org)
    with httpx.Client(base_url=live.url, headers=auth(key), timeout=10) as api:
        # Warm up: key cache, pool connections, team/user/window registration,
        # and psycopg's prepared statements (a statement run 5 times on a
        # connection is prepared, in a round trip of its own, once).
        for _ in range(10):
            assert api.post(
                "/v1/budget/check", json={"team": "t", "estimated_cost_usd": "0.01"}
            ).is_success
            assert api.post(
                "/v1/budget/reservations", json={"team": "t", "estimated_cost_usd": "0.01"}
            ).is_success
        before = proxy.round_trips()
        for _ in range(10):
            assert api.post(
                "/v1/budget/check", json={"team": "t", "estimated_cost_usd": "0.01"}
            ).is_success
            response = api.post(
                "/v1/budget/reservations", json={"team": "t", "estimated_cost_usd": "0.01"}
            )
            assert response.status_code == 201, response.text
        trips = proxy.round_trips() - before
    assert trips == 20, f"{trips} round trips for 20 requests"
