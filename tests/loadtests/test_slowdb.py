"""The slow-database proxy of compare.py delays every round trip and counts them."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import connection

from loadtests.harness.slowdb import DelayProxy, socket_path
from tests.conftest import free_port


@pytest.fixture
def proxy(db) -> DelayProxy:
    params = connection.get_connection_params()
    proxy = DelayProxy(free_port(), socket_path(params), delay_ms=50)
    proxy.start()
    yield proxy
    proxy.stop()


def test_every_round_trip_waits_and_is_counted(proxy):
    dbname = connection.settings_dict["NAME"]
    with psycopg.connect(
        host="127.0.0.1",
        port=proxy.port,
        dbname=dbname,
        user=connection.settings_dict["USER"] or "postgres",
        sslmode="disable",
        autocommit=True,
    ) as conn:
        before = proxy.round_trips()
        took = []
        for statement in ("SELECT 1", "SELECT %s::int", "BEGIN", "COMMIT"):
            started = time.monotonic()
            conn.execute(statement, [2] if "%s" in statement else None)
            took.append(time.monotonic() - started)

    assert proxy.round_trips() - before == 4
    assert all(seconds >= 0.05 for seconds in took), took
