"""Live spend over /ws/spend/: recorded events reach the signed-in users of
their organization (and no one else), and a slow or broken channel layer
never slows or fails ingest."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from decimal import Decimal
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from websockets.sync.client import connect

from budgets import auth
from config.asgi import application
from config.hotpath import db
from config.hotpath.router import Request
from dashboard import live
from tests.dashboard.conftest import cookie_header, event, record
from tracking import api as ingest
from tracking.models import Price

ORIGIN = (b"origin", b"http://127.0.0.1")


def cookie(user) -> bytes | None:
    """The session cookie of `user` (made with the sync ORM, before the loop starts)."""
    return None if user is None else cookie_header(user)["Cookie"].encode()


def communicator(session: bytes | None, query: str = "") -> WebsocketCommunicator:
    headers = [ORIGIN] if session is None else [ORIGIN, (b"cookie", session)]
    return WebsocketCommunicator(application, f"/ws/spend/{query}", headers=headers)


async def ingest_events(
    key: str | auth.ApiKeyInfo, events: list[dict[str, Any]]
) -> tuple[int, Any]:
    """POST /v1/events in this process (so that this loop's channel layer and
    tasks carry the live update)."""
    if isinstance(key, str):
        key = await auth.aauthenticate(f"Bearer {key}".encode())
    request = Request(
        method="POST",
        path="/v1/events",
        query={},
        headers={},
        body=json.dumps({"events": events}).encode(),
        key=key,
    )
    return await ingest.record_events(request)


def run(coroutine) -> Any:
    async def main():
        try:
            return await coroutine
        finally:
            await db.close_pool()

    return asyncio.run(main())


def test_recorded_events_reach_their_orgs_dashboards_only(
    org, key, make_org, make_user, make_budget
):
    make_budget(org, "100", period="month")
    ann = cookie(make_user("ann", org=org))
    outsider = cookie(make_user("bob", org=make_org("globex")))
    staff = cookie(make_user("root", staff=True))

    async def scenario():
        member, other, watcher = (
            communicator(ann),
            communicator(outsider),
            communicator(staff, "?org=acme"),
        )
        for socket in (member, other, watcher):
            connected, _ = await socket.connect()
            assert connected
        assert (await member.receive_json_from(timeout=5)) == {"type": "hello", "org": "acme"}
        assert (await other.receive_json_from(timeout=5)) == {"type": "hello", "org": "globex"}
        assert (await watcher.receive_json_from(timeout=5))["org"] == "acme"

        status, _ = await ingest_events(
            key, [event("live-1", cost="0.25", team="search"), event("live-2", cost="1", team=None)]
        )
        assert status == 201
        message = await member.receive_json_from(timeout=5)
        assert (await watcher.receive_json_from(timeout=5)) == message
        assert await other.receive_nothing(timeout=0.3)

        # A replay adds nothing: no second message.
        status, _ = await ingest_events(key, [event("live-1", cost="0.25", team="search")])
        assert status == 200
        assert await member.receive_nothing(timeout=0.3)
        for socket in (member, other, watcher):
            await socket.disconnect()
        return message

    message = run(scenario())

    assert message["type"] == "spend"
    assert {e["id"] for e in message["events"]} == {"live-1", "live-2"}
    first = next(e for e in message["events"] if e["id"] == "live-1")
    assert first["team"] == "search" and first["cost_usd"] == "0.25" and first["tokens"] == 120
    assert first["status"] == "ok" and first["priced"] is True and first["user"] == "alice"
    totals = {t["team"]: t for t in message["totals"]}
    assert totals["search"]["cost_usd"] == "0.25" and totals["search"]["requests"] == 1
    assert totals[None]["cost_usd"] == "1"
    [budget] = message["budgets"]
    assert budget["scope"] == "org" and budget["spent_usd"] == "1.25"
    # One request, one transaction, which every event and total names; the
    # message has an id of its own (a page may get it twice: test_live_exactly_once.py).
    xids = {e["xid"] for e in message["events"]} | {t["xid"] for t in message["totals"]}
    assert len(xids) == 1 and xids.pop().isdigit()
    sender, number = message["id"].rsplit(".", 1)
    assert sender and number.isdigit()


def test_nobody_listening_costs_ingest_nothing(org, key, monkeypatch):
    """No socket in the org's group and no summary keeper (in-memory layer):
    nothing is queued and the budgets are not read for no one."""
    reads = []
    fetch_value = db.fetch_value

    async def counting(name, *args, **kwargs):
        reads.append(name)
        return await fetch_value(name, *args, **kwargs)

    monkeypatch.setattr(db, "fetch_value", counting)

    async def scenario():
        status, _ = await ingest_events(key, [event("unheard", cost="1")])
        await asyncio.sleep(0.2)  # a round would have run by now
        task = live._tasks.get(org.id)
        return status, org.id in live._pending, task is not None and not task.done()

    status, pending, sending = run(scenario())

    assert status == 201
    assert not pending and not sending
    assert "list_budgets" not in reads and "record_events" in reads


@pytest.mark.parametrize(
    ("who", "query", "code"),
    [
        pytest.param(None, "", 4401, id="signed-out"),
        pytest.param("drifter", "", 4403, id="no-org"),
        pytest.param("ann", "?org=globex", 4403, id="member-of-another-org"),
        pytest.param("root", "?org=initech", 4403, id="staff-unknown-org"),
    ],
)
def test_who_may_not_listen_is_turned_away(org, make_org, make_user, who, query, code):
    make_org("globex")
    users = {
        "drifter": cookie(make_user("drifter")),
        "ann": cookie(make_user("ann", org=org)),
        "root": cookie(make_user("root", staff=True)),
    }

    async def scenario():
        socket = communicator(users.get(who), query)
        connected, close_code = await socket.connect()
        return connected, close_code

    assert run(scenario()) == (False, code)


class StuckLayer:
    async def group_send(self, group: str, message: dict) -> None:
        await asyncio.sleep(30)


class BrokenLayer:
    async def group_send(self, group: str, message: dict) -> None:
        raise ConnectionError("redis is down")


@pytest.mark.parametrize("layer", [StuckLayer(), BrokenLayer()], ids=["stuck", "broken"])
def test_a_bad_channel_layer_never_slows_or_fails_ingest(org, key, monkeypatch, caplog, layer):
    monkeypatch.setattr(live, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(live, "STEP_TIMEOUT", 0.2)

    async def scenario():
        key_info = await auth.aauthenticate(f"Bearer {key}".encode())  # opens the pool too
        started = time.monotonic()
        status, body = await ingest_events(key_info, [event("e-1", cost="0.5")])
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.5)  # the send times out (stuck) or fails (broken) meanwhile
        return status, body, elapsed

    with caplog.at_level(logging.WARNING, logger="dashboard.live"):
        status, body, elapsed = run(scenario())

    assert status == 201 and body["results"][0]["duplicate"] is False
    assert elapsed < 0.2
    assert "live update for org" in caplog.text and "dropped" in caplog.text


def test_live_updates_through_the_real_server(server, api, org, key, make_user):
    """The same path as the browser: uvicorn's websocket, the API, one process."""
    ann = make_user("ann", org=org)
    url = server.url.replace("http://", "ws://") + "/ws/spend/"

    with connect(url, additional_headers={**cookie_header(ann), "Origin": server.url}) as socket:
        assert json.loads(socket.recv(timeout=5)) == {"type": "hello", "org": "acme"}
        record(api, key, [event("over-the-wire", cost="0.75")])
        message = json.loads(socket.recv(timeout=5))

    assert [e["id"] for e in message["events"]] == ["over-the-wire"]


def test_a_live_update_carries_unpriced_spend_by_model_name(org, key, make_user):
    """Events with no price reach the page as dollars and names (the
    unpriced card), not only as a count; priced ones, or priced by the
    caller's cost, do not."""
    Price.objects.create(
        provider="openai",
        model="gpt-4o",
        input_per_token=Decimal("0.0000025"),
        output_per_token=Decimal("0.00001"),
    )
    ann = cookie(make_user("ann", org=org))

    async def scenario():
        member = communicator(ann)
        connected, _ = await member.connect()
        assert connected
        await member.receive_json_from(timeout=5)
        status, _ = await ingest_events(
            key,
            [
                event("u-1", cost=None, model="tg-mystery"),
                event("u-2", cost=None, model="tg-mystery", team="ads"),
                event("u-3", cost=None, model="tg-mystery"),
                event("p-1", cost=None),  # priced from the catalog
                event("c-1", cost="0.5", model="tg-caller"),  # the caller's cost
            ],
        )
        assert status == 201
        message = await member.receive_json_from(timeout=5)
        await member.disconnect()
        return message

    message = run(scenario())

    [xid] = {t["xid"] for t in message["totals"]}
    hour = message["events"][0]["started_at"][:13] + ":00:00Z"
    # 100 input x $2.5/M + 20 output x $10/M, at the fallback (catalog's highest) rates.
    assert sorted(message["unpriced"], key=lambda u: u["team"]) == [
        {"xid": xid, "team": "ads", "user": "alice", "model": "tg-mystery", "hour": hour,
         "requests": 1, "cost_usd": "0.00045"},
        {"xid": xid, "team": "search", "user": "alice", "model": "tg-mystery", "hour": hour,
         "requests": 2, "cost_usd": "0.0009"},
    ]  # fmt: skip
