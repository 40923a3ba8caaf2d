"""Live spend for the dashboard: after POST /v1/events has committed, its new
events and the org's budgets as they now stand go to the org's Channels
group, which every open dashboard of that org listens to (consumers.py).

Ingest never waits for any of this. `publish_events` only appends to a
per-org buffer and starts a task when none is running for that org; the
task reads the budgets (one query) and sends one message per round, taking
whatever arrived meanwhile along, so a burst of ingest costs a few messages,
not one per request. Every step has a timeout, and a failure is logged and
dropped: a slow or absent channel layer cannot slow or fail ingest.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from channels.layers import get_channel_layer

from budgets import db
from budgets.auth import ApiKeyInfo

logger = logging.getLogger(__name__)

# Seconds for each step of a round: reading the budgets, sending the message.
STEP_TIMEOUT = 1.0
# Newest events sent per round; the totals cover all of them.
MAX_EVENTS = 50


def group_name(org_id: int) -> str:
    return f"spend.org.{org_id}"


@dataclass
class _Pending:
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    # (team, user, model, UTC hour) -> [requests, errors, unpriced, cost]: the page
    # adds these to its KPIs, chart and top lists where their hour belongs.
    totals: dict[tuple[str | None, str | None, str, str], list[Any]] = field(default_factory=dict)

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        hour = event["started_at"][:13] + ":00:00Z"
        totals = self.totals.setdefault(
            (event["team"], event["user"], event["model"], hour), [0, 0, 0, Decimal(0)]
        )
        totals[0] += 1
        totals[1] += event["status"] == "error"
        totals[2] += not event["priced"]
        totals[3] += Decimal(event["cost_usd"])

    def message(self, budgets: list[Any] | None) -> dict[str, Any]:
        return {
            "type": "spend.update",
            "events": list(reversed(self.events)),  # newest first, like the summary
            "totals": [
                {
                    "team": team,
                    "user": user,
                    "model": model,
                    "hour": hour,
                    "requests": t[0],
                    "errors": t[1],
                    "unpriced_requests": t[2],
                    "cost_usd": format(t[3].normalize(), "f"),
                }
                for (team, user, model, hour), t in self.totals.items()
            ],
            "budgets": budgets,
        }


_pending: dict[int, _Pending] = {}
_tasks: dict[int, asyncio.Task] = {}


def publish_events(
    key: ApiKeyInfo, events: list[dict[str, Any]], results: list[dict[str, Any]]
) -> None:
    """Queue the new (non-duplicate) events of a recorded batch for the org's
    dashboards. Called after commit; returns at once and never raises."""
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        by_index = {event["idx"]: event for event in events}
        received = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        new = [
            _live_event(by_index[result["idx"]], result, received)
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
            _tasks[key.org_id] = loop.create_task(_send_rounds(layer, key.org_id, key.time_zone))
    except Exception:
        logger.exception("live update for org %s dropped", key.org_id)


def _live_event(event: dict[str, Any], result: dict[str, Any], received: str) -> dict[str, Any]:
    """An event as the summary's recent list shows it."""
    started = event["started_at"]
    return {
        "id": result["id"],
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


async def _send_rounds(layer: Any, org_id: int, time_zone: str) -> None:
    while (pending := _pending.pop(org_id, None)) is not None:
        budgets = None
        try:
            budgets = await db.fetch_value(
                "list_budgets", {"org_id": org_id, "tz": time_zone, "at": None}, STEP_TIMEOUT
            )
        except Exception as exc:
            logger.warning("live update for org %s without budgets: %r", org_id, exc)
        try:
            await asyncio.wait_for(
                layer.group_send(group_name(org_id), pending.message(budgets)), STEP_TIMEOUT
            )
        except Exception as exc:
            logger.warning("live update for org %s dropped: %r", org_id, exc)
