"""The production server commands of README ("Running in production") really
serve Tollgate: the JSON hot path, the Django pages and the live websocket
/ws/spend/ (which needs the server to speak ASGI websockets and to run
Channels' consumer), each in a real server process on the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import BASE_DIR, auth, free_port
from tests.dashboard.conftest import cookie_header, event

# The commands of README, bound to loopback and a free port.
SERVERS = {
    "granian": lambda port: [
        *(sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *("--log-level", "warning", "config.asgi:application"),
    ],
    "uvicorn": lambda port: [
        *(sys.executable, "-m", "uvicorn", "config.asgi:application", "--loop", "uvloop"),
        *("--http", "config.server:LimitedHttpToolsProtocol"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning"),
    ],
}


def _start(name: str, database_url: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "API_KEY_CACHE_SECONDS": "1"}
    log = log_path.open("wb")
    process = subprocess.Popen(
        SERVERS[name](port), cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not start:\n{log_path.read_text()}")


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_server_serves_api_pages_and_live_websocket(
    name, test_database_url, tmp_path, org, key, make_budget, make_user
):
    make_budget(org, "100")
    session = cookie_header(make_user("ann", org=org))
    process, url = _start(name, test_database_url, tmp_path / f"{name}.log")
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            hold = client.post(
                "/v1/budget/reservations", headers=auth(key), json={"estimated_cost_usd": "1"}
            )
            assert hold.status_code == 201, hold.text
            page = client.get("/", headers=session)
            assert page.status_code == 200
            assert "text/html" in page.headers["content-type"]

            ws_url = url.replace("http://", "ws://") + "/ws/spend/"
            with connect(ws_url, additional_headers={**session, "Origin": url}) as ws:
                assert json.loads(ws.recv(timeout=10)) == {"type": "hello", "org": "acme"}
                recorded = client.post(
                    "/v1/events",
                    headers=auth(key),
                    json={"events": [event("prod-server-1", cost="0.5")]},
                )
                assert recorded.status_code == 201, recorded.text
                message = json.loads(ws.recv(timeout=10))
        assert message["type"] == "spend"
        assert [e["id"] for e in message["events"]] == ["prod-server-1"]
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
