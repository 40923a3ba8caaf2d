"""Live spend across processes through a real Redis (`REDIS_URL`), as in
production when the dashboards have a server process of their own: events
recorded by one server reach the sockets of another, and a summary that the
second keeps for others brings what it did not see.

Skips without redis-server on a laptop; fails when CI is set (.ci/run
installs Debian's redis-server).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from decimal import Decimal

import httpx
import pytest
from websockets.sync.client import connect

from dashboard import live
from tests.conftest import free_port
from tests.dashboard.conftest import SUMMARY, cookie_header, event, record
from tests.dashboard.timing import summary_timing

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if not os.path.exists(REDIS_SERVER):
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; .ci/run must install it")
        pytest.skip("redis-server is not installed")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def split_servers(live_server_factory, redis_url):
    """The hot path and the dashboards in two processes, as README's
    production section has them, summaries kept for a minute."""
    env = {"REDIS_URL": redis_url, "DASHBOARD_SUMMARY_MAX_AGE_MS": "60000"}
    return live_server_factory(**env), live_server_factory(**env)


def test_dashboards_in_another_process_hear_and_keep_live_spend(split_servers, org, key, make_user):
    hot, web = split_servers
    session = cookie_header(make_user("ann", org=org))
    socket_url = web.url.replace("http://", "ws://") + "/ws/spend/"
    with (
        httpx.Client(base_url=hot.url, timeout=10) as gateway,
        httpx.Client(base_url=web.url, timeout=10) as page,
    ):
        record(gateway, key, [event("first", cost="1", team="search")])
        computed = page.get(SUMMARY, params={"range": "24h"}, headers=session)
        assert summary_timing(computed.headers) == 'summary;desc="computed"'
        assert computed.json()["kpis"]["spend_usd"] == "1"

        with connect(socket_url, additional_headers={**session, "Origin": web.url}) as listener:
            assert json.loads(listener.recv(timeout=5)) == {"type": "hello", "org": "acme"}
            record(gateway, key, [event("second", cost="0.5", team="search")])
            message = json.loads(listener.recv(timeout=5))

        deadline = time.monotonic() + 5
        while True:
            kept = page.get(SUMMARY, params={"range": "24h"}, headers=session).json()
            if kept["updates"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)

    # Over the socket: recorded by the other process, sent through Redis.
    assert [e["id"] for e in message["events"]] == ["second"]
    assert not live.sees(computed.json()["snapshot"], message["events"][0]["xid"])
    # The kept summary (computed before "second") and what its keeper heard.
    assert kept["kpis"]["spend_usd"] == "1"
    [update] = kept["updates"]
    sender, number = message["id"].rsplit(".", 1)
    assert any(first <= int(number) <= last for first, last in update["covers"][sender])
    assert [e["id"] for e in update["events"]] == ["second"]
    assert sum(Decimal(t["cost_usd"]) for t in update["totals"]) == Decimal("0.5")
