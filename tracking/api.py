"""Tracking's hot-path handlers.

POST /v1/events: validate a batch of request events, then record it in one
database call (tollgate_record_events): store, price, settle holds and add to
the budget windows in one transaction. A 2xx is sent only after commit, and
then `events_recorded` tells whoever listens (the live dashboard).

GET /v1/prices: the price catalog, cacheable by clients and proxies; with
?model=, the entry a model name resolves to (the SQL that prices events).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from django.conf import settings
from psycopg.types.json import Jsonb

from budgets import auth
from budgets import inputs as budget_inputs
from budgets.auth import ApiKeyInfo
from budgets.inputs import price_tier
from config.hotpath import db, inputs, metrics
from config.hotpath.errors import ApiError, JsonBody, invalid
from config.hotpath.router import Request, Response
from tracking.provider_usage import EXTRA, normalize, web_searches
from tracking.signals import events_recorded

MAX_BATCH = 1000
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
STATUSES = ("ok", "error")
MAX_PROVIDER_LENGTH = 64  # RequestEvent.provider
MAX_GEO_LENGTH = 32  # RequestEvent.inference_geo
BUCKETS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def _event_list(data: JsonBody) -> tuple[list[Any], bool]:
    """The events of a body: `{"events": [...]}` or one event object."""
    if "events" in data:
        events = data["events"]
        if not isinstance(events, list):
            raise invalid("events", "'events' must be a list of events.")
        if not events:
            raise invalid("events", "'events' must not be empty.")
        if len(events) > MAX_BATCH:
            raise ApiError(
                413,
                "payload_too_large",
                f"A batch holds at most {MAX_BATCH} events; this one has {len(events)}.",
            )
        return events, True
    return [data], False


def _started_at(value: Any, field: str) -> str | None:
    if value is None:
        return None
    # Python 3.11's fromisoformat stops reading at a NUL: "…Z\x00junk" parses.
    if not isinstance(value, str) or len(value) > 40 or not value.isprintable():
        raise invalid(field, f"'{field}' must be an ISO-8601 time with offset.")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid(field, f"'{field}' must be an ISO-8601 time with offset.") from None
    if moment.tzinfo is None:
        raise invalid(field, f"'{field}' needs a UTC offset (e.g. 'Z' or '+02:00').")
    if not EARLIEST <= moment <= datetime.now(UTC) + timedelta(days=1):
        raise invalid(field, f"'{field}' is out of range.")
    return moment.astimezone(UTC).isoformat()


def _event(raw: Any, prefix: str, key: ApiKeyInfo) -> dict[str, Any]:
    """One validated event as the SQL function takes it (raises ApiError)."""
    if not isinstance(raw, dict):
        raise invalid(prefix.rstrip("."), "Each event must be an object.")

    def field(name: str) -> str:
        return f"{prefix}{name}"

    def ident(name: str, *, required: bool = False) -> str | None:
        try:
            return inputs.identifier(raw, name, required=required)
        except ApiError as exc:
            raise invalid(
                field(name), exc.message.replace(f"'{name}'", f"'{field(name)}'")
            ) from None

    event_id = ident("id", required=True)
    team = ident("team")
    team = key.acting_team(team, field=field("team"))
    user = ident("user")
    model = ident("model", required=True)
    provider = ident("provider")
    if provider is not None and len(provider) > MAX_PROVIDER_LENGTH:
        raise invalid(
            field("provider"),
            f"'{field('provider')}' must be 1 to {MAX_PROVIDER_LENGTH} characters long.",
        )
    usage = raw.get("usage")
    searched = raw.get("web_search_calls")
    buckets = normalize(
        usage,
        field("usage"),
        grounded=isinstance(searched, int) and not isinstance(searched, bool) and searched > 0,
    )
    tier = price_tier(raw, prefix)
    buckets["web_search_calls"], search_size = web_searches(
        raw, buckets["web_search_calls"], prefix
    )
    geo = ident("inference_geo")
    if isinstance(usage, dict):
        # Anthropic's usage says both itself.
        if raw.get("service_tier") is None and raw.get("batch") is None:
            tier = price_tier(usage, field("usage."))
        if geo is None and usage.get("inference_geo") is not None:
            try:
                geo = inputs.identifier(usage, "inference_geo")
            except ApiError:
                raise invalid(
                    field("usage.inference_geo"), "'usage.inference_geo' must be a region name."
                ) from None
    if geo is not None and len(geo) > MAX_GEO_LENGTH:
        raise invalid(
            field("inference_geo"),
            f"'{field('inference_geo')}' must be at most {MAX_GEO_LENGTH} characters.",
        )
    cost = None
    if raw.get("cost_usd") is not None:
        cost = inputs.money(raw["cost_usd"], field("cost_usd"))
    latency = inputs.integer(raw, "latency_ms", low=0, high=86_400_000, path=field("latency_ms"))
    status = raw.get("status", "ok")
    if status not in STATUSES:
        raise invalid(field("status"), f"'{field('status')}' must be 'ok' or 'error'.")
    reservation_id = raw.get("reservation_id")
    if reservation_id is not None:
        try:
            if not isinstance(reservation_id, str):
                # str() of a 32-digit number would pass as a UUID.
                raise ValueError
            reservation_id = str(uuid.UUID(reservation_id))
        except ValueError:
            raise invalid(
                field("reservation_id"), f"'{field('reservation_id')}' must be a reservation id."
            ) from None
    final = raw.get("final")
    if final is None:  # null is "not sent", as for every optional field
        final = True
    elif not isinstance(final, bool):
        raise invalid(field("final"), f"'{field('final')}' must be true or false.")
    event = {
        "event_id": event_id,
        "team": team,
        "user": user,
        "model": model,
        "provider": provider,
        **{name: buckets[name] for name in BUCKETS},  # type: ignore[literal-required]
        "cost_usd": None if cost is None else str(cost),
        "latency_ms": latency,
        "status": status,
        "started_at": _started_at(raw.get("started_at"), field("started_at")),
        "reservation_id": reservation_id,
        "tags": budget_inputs.tags(raw.get("tags"), field("tags")),
    }
    # Only what is there: an event without them hashes as it did before they
    # existed, so that its replay is still a duplicate, not a conflict.
    for name in EXTRA:
        if buckets[name]:  # type: ignore[literal-required]
            event[name] = buckets[name]  # type: ignore[literal-required]
    if tier:
        event["service_tier"] = tier
    if search_size:
        event["web_search_context_size"] = search_size
    if geo and geo.lower() not in ("global", "not_available"):
        event["inference_geo"] = geo.lower()
    if not final:
        # Only a partial settlement adds it: a final event (the default)
        # hashes as events did before `final` existed, so their replays match.
        event["final"] = False
    # Same payload = same hash, whatever the JSON spelling (number vs string cost).
    canonical = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    event["payload_hash"] = hashlib.sha256(canonical).hexdigest()
    # After the hash: which key sends it is not the event's payload, so a
    # replay through another key is still a duplicate. The event counts toward
    # the budgets of the key that recorded it; key id 0 is no stored key
    # (seed_demo validates its events as a key of the org that does not exist).
    event["key_id"] = key.key_id or None
    return event


def validate(data: JsonBody, key: ApiKeyInfo) -> tuple[list[dict[str, Any]], bool]:
    """Every event checked before anything is stored; all errors reported by index."""
    raw_events, batched = _event_list(data)
    events: list[dict[str, Any]] = []
    errors: list[JsonBody] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_events):
        prefix = f"events[{index}]." if batched else ""
        try:
            event = _event(raw, prefix, key)
        except ApiError as exc:
            if exc.status != 422:
                raise
            errors.append({"index": index, "field": exc.field, "message": exc.message})
            continue
        if event["event_id"] in seen:
            errors.append(
                {
                    "index": index,
                    "field": f"{prefix}id",
                    "message": f"Event id repeats event {seen[event['event_id']]} of this batch.",
                }
            )
            continue
        seen[event["event_id"]] = index
        event["idx"] = index
        events.append(event)
    if errors:
        first = errors[0]
        raise ApiError(
            422,
            "invalid_field",
            f"{len(errors)} invalid event(s); nothing was stored. First: {first['message']}",
            field=first["field"],
            errors=errors,
        )
    return events, batched


class EventBatcher(db.Batcher):
    """Event requests of one org, recorded together by one tollgate_record_events.

    A single event that settles a hold locks the org's window like a hold
    does; sent one transaction each, they ran one after another on that row
    and the holds queued behind them. A batch is atomic in SQL, but requests
    are not atomic together: when a combined call is rejected (one request
    reuses an event id with another payload, names an unknown team in a
    strict org, or overflows), nothing of it is stored and each request is
    sent again alone, so that only the faulty one gets the error.
    """

    def __init__(self, org_id: int, strict: bool) -> None:
        super().__init__()
        self.params = {"org_id": org_id, "strict": strict}

    def fits(self, batch: list[list[dict[str, Any]]], item: list[dict[str, Any]]) -> bool:
        # Two requests naming one event id or one hold go to separate calls:
        # each gets the answer it would get alone (duplicate, settled or not).
        if not super().fits(batch, item):
            return False
        if sum(len(events) for events in batch) + len(item) > MAX_BATCH:
            return False
        taken = {e["event_id"] for events in batch for e in events}
        holds = {e["reservation_id"] for events in batch for e in events} - {None}
        return not any(
            e["event_id"] in taken
            or (e["reservation_id"] is not None and e["reservation_id"] in holds)
            for e in item
        )

    async def send(self, items: list[list[dict[str, Any]]], timeout: float) -> list[Any]:
        if len(items) == 1:
            return [await self._record_or_error(items[0], timeout)]
        deadline = time.monotonic() + timeout
        combined: list[dict[str, Any]] = []
        offsets = []
        for events in items:
            offset = len(combined)
            offsets.append(offset)
            combined.extend({**event, "idx": offset + event["idx"]} for event in events)
        try:
            result = await self._record(combined, timeout)
        except ApiError:
            # Each alone, one after another (they contend for the same rows).
            return [
                await self._record_or_error(events, max(deadline - time.monotonic(), 0.001))
                for events in items
            ]
        answers = []
        for events, offset in zip(items, offsets, strict=True):
            mine = result["results"][offset : offset + len(events)]
            answers.append(
                {
                    "status": "ok",
                    "results": [{**r, "idx": r["idx"] - offset} for r in mine],
                    "xid": result.get("xid"),
                }
            )
        return answers

    async def record(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """The result of recording one request's events; raises the ApiError
        (409, 404, 422) that request gets."""
        if settings.HOTPATH_BATCH_INFLIGHT > 0:
            return await self.submit(events)
        return await self._record(events, None)

    async def _record_or_error(self, events: list[dict[str, Any]], timeout: float) -> Any:
        """A batch's answer for one request: its result, or its ApiError (which
        the Batcher raises to that request alone)."""
        try:
            return await self._record(events, timeout)
        except ApiError as exc:
            return exc

    async def _record(self, events: list[dict[str, Any]], timeout: float | None) -> dict[str, Any]:
        """The function's result; raises ApiError for an answer that rejects
        the call (nothing of it is stored)."""
        try:
            result = await db.fetch_value(
                "record_events", {**self.params, "events": Jsonb(events)}, timeout
            )
        except psycopg.Error as exc:
            rejection = _rejection(exc)
            if rejection is None:
                raise
            raise rejection from None
        if result["status"] == "not_found":
            errors = result["errors"]
            raise ApiError(
                404,
                "not_found",
                f"Unknown {errors[0]['field']} (this organization does "
                "not register new ones); nothing was stored.",
                errors=errors,
            )
        return result


def _rejection(exc: psycopg.Error) -> ApiError | None:
    if exc.sqlstate == "22003":  # numeric_value_out_of_range
        # Each cost is capped, but a window's spent (numeric(20, 10)) can
        # still be taken past 10^10 by many of them.
        return ApiError(
            422,
            "invalid_field",
            "These costs would take a budget's spend past the largest amount "
            "Tollgate stores; nothing was stored.",
        )
    if exc.sqlstate == "TG409":
        conflicts = json.loads(exc.diag.message_detail or "[]")
        return ApiError(
            409,
            "conflict",
            "An event id was reused with a different payload; nothing was stored.",
            field=None,
            conflicts=conflicts,
        )
    return None


_batchers: dict[tuple[int, bool], EventBatcher] = {}


def _batcher(key: ApiKeyInfo) -> EventBatcher:
    """The process's batcher for the key's org (one per org: one call records
    events of one org)."""
    org = (key.org_id, key.strict)
    batcher = _batchers.get(org)
    if batcher is None:
        batcher = _batchers[org] = EventBatcher(*org)
    return batcher


async def record_events(request: Request) -> tuple[int, JsonBody | None]:
    key = request.key
    assert key is not None
    events, _batched = validate(request.json(), key)
    result = await _batcher(key).record(events)
    # Committed: open dashboards hear of it, without ingest waiting for them.
    events_recorded.send(
        sender=None, key=key, events=events, results=result["results"], xid=result.get("xid")
    )
    results = [
        {k: v for k, v in r.items() if k != "idx" and (k != "reservation" or v is not None)}
        for r in result["results"]
    ]
    duplicates = sum(1 for r in results if r["duplicate"])
    metrics.labelled(metrics.EVENTS, "new").inc(len(results) - duplicates)
    metrics.labelled(metrics.EVENTS, "duplicate").inc(duplicates)
    new = duplicates < len(results)
    return (201 if new else 200), {"results": results}


async def prices(request: Request) -> Response:
    """The catalog, or with ?model= the entry that name resolves to. The route
    takes no key; a caller that sends one has its org's aliases applied too
    (and gets a private answer: it depends on the org)."""
    model = inputs.identifier(request.query, "model")
    if model is None:
        catalog = await db.fetch_value("price_catalog", {})
        return _cacheable(request, {"prices": catalog}, private=False)
    header = request.headers.get(b"authorization")
    key = None if header is None else await auth.aauthenticate(header)
    tier = price_tier(request.query)
    entry = await db.fetch_value(
        "price_of_model",
        {"org_id": None if key is None else key.org_id, "model": model, "service_tier": tier},
    )
    if entry is None:
        raise ApiError(404, "not_found", f"No price entry for the model {model!r}.", field="model")
    body = {"prices": [entry], "model": model, "price_model": entry["model"]}
    return _cacheable(request, body, private=key is not None)


def _cacheable(request: Request, body: JsonBody, *, private: bool) -> Response:
    etag = '"' + hashlib.sha256(orjson.dumps(body)).hexdigest()[:32] + '"'
    headers = {"etag": etag, "cache-control": f"{'private' if private else 'public'}, max-age=300"}
    given = request.headers.get(b"if-none-match", b"").decode("latin-1")
    if etag in {tag.strip() for tag in given.split(",")} or given.strip() == "*":
        return Response(304, None, headers)
    return Response(200, body, headers)
