"""Live spend for the dashboard: after POST /v1/events has committed, its new
events and the org's budgets as they now stand go to the org's Channels
group, which every open dashboard of that org listens to (consumers.py).

Ingest never waits for any of this. `on_events_recorded` only appends to a
per-org buffer and starts a task when none is running for that org; the
task reads the budgets (one query) and sends one message per round, taking
whatever arrived meanwhile along, so a burst of ingest costs a few messages,
not one per request. Every step has a timeout, and a failure is logged and
dropped: a slow or absent channel layer cannot slow or fail ingest.

Exactly once on the page. Each event and each total carries the id of the
transaction that recorded it (`xid`), and each summary the snapshots its
statements read (`snapshot`, `chart_snapshot`: the transactions they saw).
A page joins its group first, then loads its summary, and adds only what
that summary did not see (`sees`). A summary kept for others
(DASHBOARD_SUMMARY_MAX_AGE_MS) was computed before their sockets joined: a
`Keeper` hears the org's group from before the computation starts, and
such an answer carries what was heard since (dashboard/api.py, `updates`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

from budgets.auth import ApiKeyInfo
from config.hotpath import db
from config.hotpath.inputs import usd_text

logger = logging.getLogger(__name__)

# Seconds for each step of a round: reading the budgets, sending the message.
STEP_TIMEOUT = 1.0
# Newest events sent per round; the totals cover all of them.
MAX_EVENTS = 50
# Messages a keeper holds at most (the oldest go first).
MAX_HEARD = 10_000
# Rows of a top list in a summary (tollgate_dashboard_breakdown's LIMIT).
TOP_LIMIT = 10


def group_name(org_id: int) -> str:
    return f"spend.org.{org_id}"


@dataclass
class _Pending:
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    # (transaction, team, user, model, UTC hour) -> [requests, errors, unpriced,
    # cost]: the page adds these to its KPIs, chart and top lists where their
    # hour belongs, unless its summary saw the transaction.
    totals: dict[tuple[str | None, str | None, str | None, str, str], list[Any]] = field(
        default_factory=dict
    )
    # (transaction, team, user, model, UTC hour) -> [requests, cost] of the
    # events with no price: the page adds these to its unpriced dollars and
    # model names (kpis.unpriced_usd, unpriced_models), by name, which the
    # totals may not keep (a summary's `updates` fold names it does not show).
    unpriced: dict[tuple[str | None, str | None, str | None, str, str], list[Any]] = field(
        default_factory=dict
    )

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        hour = event["started_at"][:13] + ":00:00Z"
        totals = self.totals.setdefault(
            (event["xid"], event["team"], event["user"], event["model"], hour),
            [0, 0, 0, Decimal(0)],
        )
        totals[0] += 1
        totals[1] += event["status"] == "error"
        totals[2] += not event["priced"]
        totals[3] += Decimal(event["cost_usd"])
        if not event["priced"]:
            _add_unpriced(
                self.unpriced,
                (event["xid"], event["team"], event["user"], event["model"], hour),
                1,
                Decimal(event["cost_usd"]),
            )

    def message(self, budgets: list[Any] | None) -> dict[str, Any]:
        return {
            "type": "spend.update",
            "id": message_id(),  # one message may reach a page twice (`updates`)
            "events": list(reversed(self.events)),  # newest first, like the summary
            "totals": _total_rows(self.totals),
            "unpriced": _unpriced_rows(self.unpriced),
            "budgets": budgets,
        }


def _add_unpriced(
    unpriced: dict[tuple[Any, ...], list[Any]], key: tuple[Any, ...], requests: int, cost: Decimal
) -> None:
    sums = unpriced.setdefault(key, [0, Decimal(0)])
    sums[0] += requests
    sums[1] += cost


def _unpriced_rows(unpriced: dict[tuple[Any, ...], list[Any]]) -> list[dict[str, Any]]:
    """Unpriced sums keyed (xid, team, user, model, hour) -> [requests, cost]
    as a message carries them."""
    return [
        {
            "xid": xid,
            "team": team,
            "user": user,
            "model": model,
            "hour": hour,
            "requests": u[0],
            "cost_usd": usd_text(u[1]),
        }
        for (xid, team, user, model, hour), u in unpriced.items()
    ]


# This process, among the senders of an org's group, and its messages' numbers.
_SENDER = uuid.uuid4().hex[:12]
_numbers = itertools.count(1)


def message_id() -> str:
    """ "<sender>.<number>": a process numbers its messages from 1, and a
    keeper hears one sender's messages in that order, so the messages a
    summary's `updates` stand for are a few ranges per sender (`covers`)."""
    return f"{_SENDER}.{next(_numbers)}"


def _total_rows(totals: dict[tuple[Any, ...], list[Any]]) -> list[dict[str, Any]]:
    """Totals keyed (xid, team, user, model, hour) -> [requests, errors,
    unpriced, cost] as a message carries them."""
    return [
        {
            "xid": xid,
            "team": team,
            "user": user,
            "model": model,
            "hour": hour,
            "requests": t[0],
            "errors": t[1],
            "unpriced_requests": t[2],
            "cost_usd": usd_text(t[3]),
        }
        for (xid, team, user, model, hour), t in totals.items()
    ]


_pending: dict[int, _Pending] = {}
_tasks: dict[int, asyncio.Task] = {}


def on_events_recorded(
    sender: Any,
    *,
    key: ApiKeyInfo,
    events: list[dict[str, Any]],
    results: list[dict[str, Any]],
    xid: str | None,
    **kwargs: Any,
) -> None:
    """Queue the new (non-duplicate) events of a recorded batch for the org's
    dashboards; `xid` is the transaction that recorded them. Called after
    commit; returns at once and never raises."""
    try:
        layer = get_channel_layer()
        if layer is None or _nobody_listens(layer, key.org_id):
            return
        by_index = {event["idx"]: event for event in events}
        received = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        new = [
            _live_event(by_index[result["idx"]], result, received, xid)
            for result in results
            if not result["duplicate"]
        ]
        if not new:
            return
        pending = _pending.setdefault(key.org_id, _Pending())
        for event in new:
            pending.add(event)
        task = _tasks.get(key.org_id)
        loop = asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            _tasks[key.org_id] = loop.create_task(_send_rounds(layer, key.org_id))
    except Exception:
        logger.exception("live update for org %s dropped", key.org_id)


def _nobody_listens(layer: Any, org_id: int) -> bool:
    """With the in-memory layer every listener is in this process: when no
    socket is in the org's group and no summary keeper hears it, a round
    would read the budgets for no one (a query per round, most of the time).
    An event skipped here is in every summary loaded later: a page joins
    before it loads, a summary's keeper before it computes. Other layers
    cannot tell cheaply and always send."""
    if not isinstance(layer, InMemoryChannelLayer):
        return False
    return not layer.groups.get(group_name(org_id)) and org_id not in _keepers


def _live_event(
    event: dict[str, Any], result: dict[str, Any], received: str, xid: str | None
) -> dict[str, Any]:
    """An event as the summary's recent list shows it, and its transaction."""
    started = event["started_at"]
    return {
        "id": result["id"],
        "xid": xid,
        "started_at": _utc_z(started) if started else received,
        "team": event["team"],
        "user": event["user"],
        "model": event["model"],
        "tokens": sum(
            event[bucket]
            for bucket in (
                "input_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "output_tokens",
                "reasoning_tokens",
            )
        ),
        "cost_usd": result["cost_usd"],
        "priced": result["priced"],
        "status": event["status"],
        "latency_ms": event["latency_ms"],
    }


def _utc_z(iso: str) -> str:
    """ingest stores started_at as UTC isoformat ("…+00:00"); the API writes "Z"."""
    return iso.removesuffix("+00:00") + "Z"


async def _send_rounds(layer: Any, org_id: int) -> None:
    while (pending := _pending.pop(org_id, None)) is not None:
        budgets = None
        try:
            budgets = await db.fetch_value(
                "list_budgets", {"org_id": org_id, "at": None}, STEP_TIMEOUT
            )
        except Exception as exc:
            logger.warning("live update for org %s without budgets: %r", org_id, exc)
        message = pending.message(budgets)
        keeper = _keepers.get(org_id)
        if keeper is not None and keeper.local:
            keeper.hear(message)
        try:
            await asyncio.wait_for(layer.group_send(group_name(org_id), message), STEP_TIMEOUT)
        except Exception as exc:
            logger.warning("live update for org %s dropped: %r", org_id, exc)


def client_message(message: dict[str, Any]) -> dict[str, Any]:
    """A group message as /ws/spend/ and a summary's `updates` send it."""
    return {
        "type": "spend",
        "id": message["id"],
        "events": message["events"],
        "totals": message["totals"],
        "unpriced": message.get("unpriced", []),
        "budgets": message["budgets"],
    }


class Unseen:
    """What the group messages a keeper heard from monotonic time `since` on
    carry that a summary whose statements read `snapshots` did not all see,
    added up as they arrive (`fold`): each message is read once, however
    many requests the summary answers.

    `message()` is one client message: the totals added up, a total's `xid`
    left out (null) where none of the statements saw it, the newest
    MAX_EVENTS events, the newest budgets among the messages that had news,
    and `covers`, every message it stands for (by sender, ranges of message
    numbers: see `message_id`), so that a page that also heard one of them
    over its socket adds it once.

    Unpriced spend (`unpriced`) is kept by model name, whatever the chart
    and top lists show: the page lists new names on its unpriced card.

    A team, user or model that the summary's chart and top lists leave out
    is `false` in the totals (`shown`): the page adds such spend to the
    chart's "other" stack and to no top list, as it would with the name, and
    seconds of a busy org's ingest add up to a few hundred rows, not one per
    request."""

    def __init__(
        self, snapshots: tuple[str | None, ...], since: float, shown: Shown | None = None
    ) -> None:
        self.snapshots = snapshots
        self.since = since
        self.shown = shown or Shown()
        self.folded = 0  # the keeper's sequence number of the last message read
        self.covers: dict[str, list[list[int]]] = {}  # sender -> [[first, last], ...]
        self.totals: dict[tuple[Any, ...], list[Any]] = {}
        self.unpriced: dict[tuple[Any, ...], list[Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.budgets: list[Any] | None = None

    def fold(self, heard: list[tuple[int, float, dict[str, Any]]]) -> None:
        """Add `heard` ((sequence number, time, message), oldest first)."""
        for number, at, message in heard:
            if number <= self.folded or at < self.since:
                continue
            self.folded = number
            self._add(message)
        self.events.sort(key=lambda e: e["started_at"], reverse=True)
        del self.events[MAX_EVENTS:]

    def _add(self, message: dict[str, Any]) -> None:
        sender, number = message["id"].rsplit(".", 1)
        ranges = self.covers.setdefault(sender, [])
        if ranges and ranges[-1][1] == int(number) - 1:
            ranges[-1][1] = int(number)
        else:
            ranges.append([int(number), int(number)])
        shown = self.shown
        news = False
        for total in message["totals"]:
            seen = [sees(snapshot, total["xid"]) for snapshot in self.snapshots]
            if all(seen):
                continue
            news = True  # of any team: the budgets include the org's
            if not shown.matches(total):
                continue  # a filtered page shows the spend of its filters only
            xid = total["xid"] if any(seen) else None
            key = (
                xid,
                _shown(shown.teams, total["team"]),
                _shown(shown.users, total["user"]),
                _shown(shown.models, total["model"]),
                total["hour"],
            )
            sums = self.totals.setdefault(key, [0, 0, 0, Decimal(0)])
            sums[0] += total["requests"]
            sums[1] += total["errors"]
            sums[2] += total["unpriced_requests"]
            sums[3] += Decimal(total["cost_usd"])
        # The unpriced dollars and names are the KPIs' (the first statement's
        # snapshot), kept by name: a new name is what the page must show.
        for row in message.get("unpriced", []):
            if sees(self.snapshots[0], row["xid"]):
                continue
            if not shown.matches(row):
                continue
            key = (None, row["team"], row.get("user"), row["model"], row["hour"])
            _add_unpriced(self.unpriced, key, row["requests"], Decimal(row["cost_usd"]))
        self.events.extend(
            e
            for e in message["events"]
            if shown.matches(e) and not all(sees(s, e["xid"]) for s in self.snapshots)
        )
        if news and message["budgets"] is not None:
            self.budgets = message["budgets"]

    def message(self) -> dict[str, Any] | None:
        """None while there is nothing the statements did not see."""
        if not self.totals and not self.events:
            return None
        return {
            "type": "spend",
            "id": uuid.uuid4().hex,
            "covers": {sender: [list(r) for r in ranges] for sender, ranges in self.covers.items()},
            "events": list(self.events),
            "totals": _total_rows(self.totals),
            "unpriced": _unpriced_rows(self.unpriced),
            "budgets": self.budgets,
        }


@dataclass(frozen=True)
class Shown:
    """The teams, users and models a summary names in its chart and top lists;
    None: every one of them counts (a top list that is not full holds
    everyone with spend in the range, a chart without an "other" stack every
    key)."""

    teams: frozenset[str | None] | None = None
    users: frozenset[str | None] | None = None
    models: frozenset[str | None] | None = None
    team: str | None = None  # a team's page: the only team it shows
    user: str | None = None  # a user's page: the only end user it shows
    model: str | None = None  # a model's page: the only model it shows

    def matches(self, row: dict[str, Any]) -> bool:
        """Whether a live total, unpriced sum or event is of the page's filters."""
        return (
            (self.team is None or row["team"] == self.team)
            and (self.user is None or row.get("user") == self.user)
            and (self.model is None or row["model"] == self.model)
        )

    @classmethod
    def of(
        cls,
        breakdown: dict[str, Any],
        team: str | None,
        user: str | None = None,
        model: str | None = None,
    ) -> Shown:
        top, chart = breakdown["top"], breakdown["chart"]
        keys = frozenset(s["key"] for s in chart["series"] if not s["other"])
        has_other = any(s["other"] for s in chart["series"])

        def names(rows: list[dict[str, Any]], stacked: bool) -> frozenset[str | None] | None:
            if len(rows) < TOP_LIMIT or (stacked and not has_other):
                return None
            return frozenset(r["id"] for r in rows) | (keys if stacked else frozenset())

        return cls(
            teams=None if team is not None else names(top["teams"], chart["split_by"] == "team"),
            users=names(top["users"], False),
            models=names(top["models"], chart["split_by"] == "model"),
            team=team,
            user=user,
            model=model,
        )


def _shown(names: frozenset[str | None] | None, name: str | None) -> str | bool | None:
    return name if names is None or name in names else False


@functools.lru_cache(maxsize=64)
def _snapshot(text: str) -> tuple[int, int, frozenset[str]]:
    xmin, xmax, in_progress = text.split(":")
    return int(xmin), int(xmax), frozenset(in_progress.split(","))


def sees(snapshot: str | None, xid: str | None) -> bool:
    """Whether a statement that read `snapshot` (PostgreSQL's
    pg_current_snapshot() text, "xmin:xmax:xip,…") saw the committed
    transaction `xid`. The page has the same rule (dashboard.js, `sees`)."""
    if snapshot is None or xid is None:
        return False
    xmin, xmax, in_progress = _snapshot(snapshot)
    number = int(xid)
    return number < xmin or (number < xmax and xid not in in_progress)


class Keeper:
    """Hears one org's group in this process and keeps what it heard for a
    while: the live updates that a summary computed after it joined may not
    have seen, for pages that get that summary after their own socket has
    joined (a summary kept for DASHBOARD_SUMMARY_MAX_AGE_MS). Stops once no
    summary has asked for it for `span` seconds."""

    def __init__(self, layer: Any, org_id: int) -> None:
        self.org_id = org_id
        self.span = 0.0  # seconds of messages kept, and of idleness before stopping
        self.until = 0.0  # monotonic time to stop at
        # (sequence number, monotonic time heard, message), oldest first.
        self.heard: deque[tuple[int, float, dict[str, Any]]] = deque(maxlen=MAX_HEARD)
        self.count = 0
        # With the in-memory layer every sender is in this process: _send_rounds
        # hands the keeper its messages (the layer would deep-copy each one,
        # ~10% of the server's CPU under the mixed benchmark's ingest).
        self.local = isinstance(layer, InMemoryChannelLayer)
        self._timer: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self.joined: asyncio.Future[None] = loop.create_future()
        # Its error is logged by _run, whether or not keep() still waits for it.
        self.joined.add_done_callback(lambda joined: joined.cancelled() or joined.exception())
        self.task = loop.create_task(self._run(layer))

    def after(self, number: int) -> list[tuple[int, float, dict[str, Any]]]:
        """What was heard after the message numbered `number`, oldest first."""
        if not self.heard or self.heard[-1][0] <= number:
            return []
        return [entry for entry in self.heard if entry[0] > number]

    def hear(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        self.count += 1
        self.heard.append((self.count, now, message))
        while self.heard and self.heard[0][1] < now - self.span:
            self.heard.popleft()

    async def _run(self, layer: Any) -> None:
        self._stop_when_idle()
        try:
            if self.local:
                self.joined.set_result(None)
                await asyncio.get_running_loop().create_future()  # until stopped
            else:
                await self._hear_group(layer)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if _keepers.get(self.org_id) is self:
                del _keepers[self.org_id]
            if not self.joined.done():
                self.joined.set_exception(RuntimeError("the keeper stopped before it joined"))

    async def _hear_group(self, layer: Any) -> None:
        group = group_name(self.org_id)
        channel = await layer.new_channel("dashboard-keeper")
        try:
            await asyncio.wait_for(layer.group_add(group, channel), STEP_TIMEOUT)
            self.joined.set_result(None)
            while True:
                self.hear(await layer.receive(channel))
        except Exception as exc:
            if not self.joined.done():
                self.joined.set_exception(exc)
            logger.warning("keeper of org %s stopped: %r", self.org_id, exc)
        finally:
            try:
                await asyncio.wait_for(layer.group_discard(group, channel), STEP_TIMEOUT)
            except Exception as exc:
                logger.warning("keeper of org %s left its group uncleanly: %r", self.org_id, exc)

    def _stop_when_idle(self) -> None:
        left = self.until - time.monotonic()
        if left > 0:
            self._timer = asyncio.get_running_loop().call_later(left, self._stop_when_idle)
            return
        if _keepers.get(self.org_id) is self:
            del _keepers[self.org_id]  # the next summary starts a new one
        self.task.cancel()


_keepers: dict[int, Keeper] = {}


async def keep(org_id: int, seconds: float) -> Keeper | None:
    """The org's keeper, joined to its group, kept for at least `seconds`
    from now; None (logged) when the channel layer cannot be joined in time:
    the summary is then served without `updates`."""
    try:
        layer = get_channel_layer()
        if layer is None:
            return None
        keeper = _keepers.get(org_id)
        loop = asyncio.get_running_loop()
        if keeper is None or keeper.task.done() or keeper.task.get_loop() is not loop:
            keeper = _keepers[org_id] = Keeper(layer, org_id)
        keeper.span = max(keeper.span, seconds)
        keeper.until = max(keeper.until, time.monotonic() + seconds)
        await asyncio.wait_for(asyncio.shield(keeper.joined), STEP_TIMEOUT)
        return keeper
    except Exception as exc:
        logger.warning("summary of org %s without live updates: %r", org_id, exc)
        return None
