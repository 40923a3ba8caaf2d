"""Hot-path handlers (docs/api.md, "Budget hot path" and "Managing budgets").

Each handler: parse and validate, one database call, shape the answer. The
decision logic itself is SQL (budgets/sql/functions/) so that it runs in
one round trip and one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg.types.json import Jsonb

from budgets import inputs, labels
from budgets.audit import client_address
from budgets.auth import ApiKeyInfo
from config.hotpath import db, metrics
from config.hotpath.errors import ApiError, JsonBody, invalid
from config.hotpath.inputs import boolean, identifier, integer, money, usd_for_people, usd_text
from config.hotpath.router import Request, Response

logger = logging.getLogger(__name__)

Answer = tuple[int, JsonBody | None]


def _decide_params(key: ApiKeyInfo, d: inputs.Decision, *, hold: bool) -> dict[str, Any]:
    return {
        "org_id": key.org_id,
        "strict": key.strict,
        "team": d.team,
        "user": d.user,
        "model": d.model,
        "amount": d.amount,
        "input_tokens": d.input_tokens,
        "max_output_tokens": d.max_output_tokens,
        "hold": hold,
        "ttl_seconds": d.ttl_seconds,
        "at": None,
        "key_id": key.key_id,
        "service_tier": d.service_tier,
        "tags": None if d.tags is None else Jsonb(d.tags),
    }


def _fail_open(key: ApiKeyInfo) -> bool:
    return (key.fail_mode or settings.BUDGET_FAIL_MODE) == "open"


def _raise_for_lookup(result: JsonBody, d: inputs.Decision) -> None:
    status = result["status"]
    if status == "not_found":
        field = result["field"]
        raise ApiError(
            404,
            "not_found",
            f"Unknown {field} '{getattr(d, field)}' "
            "(this organization does not register new ones).",
            field=field,
        )
    if status == "model_not_allowed":
        refused = result["refused_by"]
        raise ApiError(
            403,
            "model_not_allowed",
            f"Model '{d.model}' is not allowed by the {refused['scope']} '{refused['id']}' model "
            "allow-list; nothing was held.",
            field="model",
            scope=refused["scope"],
            id=refused["id"],
        )
    if status == "unpriced_model":
        raise ApiError(
            422,
            "unpriced_model",
            f"No price is known for model '{d.model}', and this organization refuses "
            "checks and holds of models with no price.",
            field="model",
        )
    if status == "unpriced":
        raise invalid(
            "model", f"No price is known for model '{d.model}'; send 'estimated_cost_usd' instead."
        )
    if status == "too_expensive":
        cap = result["cap"]
        raise ApiError(
            402,
            "request_too_expensive",
            f"This request's estimate of {usd_for_people(Decimal(result['amount_usd']))} is over "
            f"the {cap['scope']} '{cap['id']}' cap of "
            f"{usd_for_people(Decimal(cap['max_request_usd']))} per request; nothing was held.",
            scope=cap["scope"],
            id=cap["id"],
            max_request_usd=cap["max_request_usd"],
            amount_usd=result["amount_usd"],
        )


class DecisionBatcher(db.Batcher):
    """Holds of any org, decided together by tollgate_decide_many."""

    async def send(self, items: list[dict[str, Any]], timeout: float) -> list[Any]:
        if len(items) == 1:
            return [await db.fetch_value("decide", items[0], timeout)]
        batch = [_batch_item(item) for item in items]
        # JSON text, parsed here rather than checked by PostgreSQL first.
        return orjson.loads(await db.fetch_value("decide_many", {"items": Jsonb(batch)}, timeout))


def _batch_item(params: dict[str, Any]) -> dict[str, Any]:
    """A decide query's parameters as JSON (amounts as exact decimal strings)."""
    item = dict(params)
    if item.get("amount") is not None:
        item["amount"] = str(item["amount"])
    if item.get("tags") is not None:
        item["tags"] = item["tags"].obj
    return item


_batcher: DecisionBatcher | None = None


def batcher() -> DecisionBatcher:
    global _batcher
    if _batcher is None:
        _batcher = DecisionBatcher()
    return _batcher


async def decide(
    key: ApiKeyInfo, d: inputs.Decision, *, hold: bool, kind: str | None = None
) -> JsonBody | None:
    """Run the decision; raises ApiError for unknown subjects or unpriced models.

    Holds go through the process's batcher (they contend for row locks);
    checks take no locks and run directly. With `kind` ("check" or
    "reserve") the decision is counted, and an unreachable store answers per
    fail mode: None when the org fails open, StoreUnavailable (503) otherwise."""
    params = _decide_params(key, d, hold=hold)
    try:
        if hold and settings.HOTPATH_BATCH_INFLIGHT > 0:
            result = await batcher().submit(params)
        else:
            result = await db.fetch_value("decide", params)
    except psycopg.errors.NumericValueOutOfRange:
        # Each amount is capped, but holds on a monitor-only budget (never
        # denied) can still take its window's reserved past numeric(20, 10).
        raise ApiError(
            422,
            "invalid_field",
            "This hold would take a budget's reserved amount past the largest amount "
            "Tollgate stores; nothing was held.",
            field="estimated_cost_usd" if d.amount is not None else "estimate",
        ) from None
    except db.StoreUnavailable:
        if kind is None:
            raise
        if not _fail_open(key):
            metrics.labelled(metrics.DECISIONS, kind, "unavailable").inc()
            raise
        metrics.labelled(metrics.DECISIONS, kind, "degraded").inc()
        return None
    _raise_for_lookup(result, d)
    if kind is not None:
        outcome = "deny" if result["status"] == "denied" else "allow"
        metrics.labelled(metrics.DECISIONS, kind, outcome).inc()
    return result


def _blocked_by(result: JsonBody) -> JsonBody | None:
    blocked = result.get("blocked")
    if blocked is None:
        return None
    return {
        "scope": blocked["scope"],
        "id": blocked["id"],
        "model": blocked.get("model"),
        "period": blocked["period"],
    }


def _degraded_amount(d: inputs.Decision) -> str | None:
    return None if d.amount is None else usd_text(d.amount)


async def check(request: Request) -> Answer:
    key = request.key
    assert key is not None
    d = inputs.decision(request.json(), key=key, require_amount=False)
    result = await decide(key, d, hold=False, kind="check")
    if result is None:  # fail-open
        return 200, {
            "allowed": True,
            "degraded": True,
            "estimated_cost_usd": _degraded_amount(d),
            "warnings": [],
            "budgets": [],
            "blocked_by": None,
        }
    return 200, {
        "allowed": result["status"] != "denied",
        "estimated_cost_usd": result["amount_usd"],
        "warnings": result["warnings"],
        "budgets": result["budgets"],
        "blocked_by": _blocked_by(result),
    }


async def reserve(request: Request) -> Answer:
    key = request.key
    assert key is not None
    d = inputs.decision(request.json(), key=key, require_amount=True)
    result = await decide(key, d, hold=True, kind="reserve")
    if result is None:
        # Fail-open: the call may go ahead, but nothing was held.
        return 201, {
            "reservation_id": None,
            "degraded": True,
            "amount_usd": _degraded_amount(d),
            "expires_at": None,
            "budgets": [],
            "warnings": [],
        }
    if result["status"] == "denied":
        raise _budget_exceeded(result)
    return 201, {
        "reservation_id": result["reservation_id"],
        "amount_usd": result["amount_usd"],
        "expires_at": result["expires_at"],
        "budgets": result["budgets"],
        "warnings": result["warnings"],
    }


def _budget_exceeded(result: JsonBody) -> ApiError:
    """402 naming the budget that refused, with its amounts as people read them."""
    blocked = result["blocked"]
    money = {k: Decimal(blocked[k]) for k in ("limit_usd", "spent_usd", "reserved_usd")}
    left = Decimal(blocked["remaining_usd"])
    of_model = f" for models {blocked['model']}" if blocked.get("model") else ""
    message = (
        f"The {blocked['scope']} budget '{blocked['id']}'{of_model} ({blocked['period']}) has "
        f"{usd_for_people(left)} left of {usd_for_people(money['limit_usd'])} "
        f"({usd_for_people(money['spent_usd'])} spent, "
        f"{usd_for_people(money['reserved_usd'])} held); "
        f"this request needs {usd_for_people(Decimal(result['amount_usd']))}."
    )
    return ApiError(
        402,
        "budget_exceeded",
        message,
        scope=blocked["scope"],
        id=blocked["id"],
        model=blocked.get("model"),
        period=blocked["period"],
        limit_usd=blocked["limit_usd"],
        spent_usd=blocked["spent_usd"],
        reserved_usd=blocked["reserved_usd"],
        remaining_usd=blocked["remaining_usd"],
        resets_at=blocked["resets_at"],
    )


def _reservation_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.params["reservation_id"])
    except ValueError:
        raise ApiError(404, "not_found", "Unknown reservation.") from None


def _retention() -> timedelta | None:
    """How long closed holds are kept (run_worker deletes them then)."""
    days = settings.RESERVATION_RETENTION_DAYS
    return timedelta(days=days) if days else None


async def release(request: Request) -> Answer:
    key = request.key
    assert key is not None
    reservation_id = _reservation_id(request)
    result = await db.fetch_value(
        "release",
        {"org_id": key.org_id, "reservation_id": reservation_id, "retention": _retention()},
    )
    if result["status"] == "not_found":
        # Another organization's reservation is unknown here too.
        raise ApiError(404, "not_found", "Unknown reservation.")
    return 200, {
        "reservation_id": str(reservation_id),
        "status": result["status"],
        "released": result["status"] == "released",
    }


async def extend(request: Request) -> Answer:
    """A hold's expiry pushed to ttl_seconds from now (never earlier), for long
    and streamed calls; the body may be empty."""
    key = request.key
    assert key is not None
    reservation_id = _reservation_id(request)
    data = request.json() if request.body.strip() else {}
    ttl = inputs.ttl_seconds(data)
    result = await db.fetch_value(
        "extend",
        {
            "org_id": key.org_id,
            "reservation_id": reservation_id,
            "ttl_seconds": ttl,
            "retention": _retention(),
        },
    )
    if result["status"] == "not_found":
        raise ApiError(404, "not_found", "Unknown reservation.")
    if result["status"] != "active":
        closed = result["status"]
        how = "is closed" if closed == "closed" else f"was {closed}"
        error = ApiError(
            409,
            "reservation_closed",
            f"The reservation {how}; only an active hold can be extended.",
        )
        error.extra["status"] = closed  # not a keyword: ApiError's own `status` is the HTTP one
        raise error
    return 200, {
        "reservation_id": str(reservation_id),
        "status": "active",
        "expires_at": result["expires_at"],
        "amount_usd": result["amount_usd"],
        "settled_usd": result["settled_usd"],
    }


async def status(request: Request) -> Answer:
    """The budgets a request of these team, user, model and tags (repeated
    `tag=name=value`) would meet, as they stand."""
    key = request.key
    assert key is not None
    query: dict[str, Any] = {
        k: v for k, v in request.query.items() if k in ("team", "user", "model")
    }
    pairs = request.query_all("tag")
    if pairs:
        query["tags"] = dict(
            inputs.tag_pair(pair, "tag").split("=", 1) for pair in pairs[: labels.MAX_TAGS + 1]
        )
    d = inputs.decision(query, key=key, require_amount=False)
    result = await decide(key, d, hold=False)
    assert result is not None  # no fail mode without `kind`
    return 200, {"budgets": result["budgets"], "warnings": result["warnings"]}


# --- Managing budgets (admin keys) ------------------------------------------------


def _require_admin(request: Request) -> ApiKeyInfo:
    key = request.key
    assert key is not None
    if not key.is_admin:
        raise ApiError(403, "forbidden", "Managing budgets needs an admin API key.")
    return key


def _audit_params(request: Request, key: ApiKeyInfo) -> dict[str, Any]:
    """Who changes a budget, for the audit entry its SQL function writes."""
    return {
        "key_id": key.key_id,
        "request_id": request.request_id,
        "client_addr": client_address(request.client),
    }


# The public part of a key (tg_<lookup id>_<secret>), as ApiKey.generate makes it.
_KEY_LOOKUP_ID = re.compile(r"[0-9a-f]{12}")


def _scope(value: str, field: str = "scope") -> str:
    if value not in inputs.SCOPES:
        raise invalid(field, f"'{field}' must be one of {', '.join(inputs.SCOPES)}.")
    return value


def _budget_path(request: Request, key: ApiKeyInfo) -> tuple[str, str, str, str]:
    """(scope, subject, period, model filter) of a budget's URL."""
    scope, subject, period = (request.params[k] for k in ("scope", "subject", "period"))
    _scope(scope)
    if period not in inputs.PERIODS:
        raise invalid("period", "'period' must be one of day, week, month, total.")
    if scope == "tag":
        inputs.tag_pair(subject, "id")
    else:
        identifier({"id": subject}, "id", required=True)
    if scope == "key" and not _KEY_LOOKUP_ID.fullmatch(subject):
        raise invalid("id", "A key budget's id is the key's lookup id: 12 hex digits.")
    model = inputs.model_pattern(request.query.get("model"))
    if key.team_slug is not None and (scope != "team" or subject != key.team_slug):
        raise ApiError(403, "forbidden", "This API key may only manage its own team's budgets.")
    return scope, subject, period, model


async def list_budgets(request: Request) -> Answer:
    """Every budget of the org, or those the filters keep (docs/api.md)."""
    key = _require_admin(request)
    query = request.query
    scope = None if query.get("scope") is None else _scope(query["scope"])
    team = identifier(dict(query), "team")
    tag = query.get("tag")
    if tag is not None and "=" in tag:
        inputs.tag_pair(tag, "tag")
    elif tag is not None and labels.tag_problem(tag, "") is not None:
        raise invalid("tag", f"'tag' must be a tag name or name=value. {labels.TAG_RULE}")
    model = None
    if "model" in query:
        model = inputs.model_pattern(query["model"])
    if key.team_slug is not None:
        team = key.team_slug  # a team-limited key sees its own team's budgets only
        if scope not in (None, "team") or tag is not None:
            return 200, {"budgets": []}
        scope = "team"
    budgets = await db.fetch_value(
        "list_budgets_where",
        {
            "org_id": key.org_id,
            "at": None,
            "scope": scope,
            "team": team,
            "tag": tag,
            "model": model,
        },
    )
    return 200, {"budgets": budgets}


async def put_budget(request: Request) -> Answer:
    key = _require_admin(request)
    scope, subject, period, model = _budget_path(request, key)
    data = request.json()
    if data.get("limit_usd") is None:
        raise invalid("limit_usd", "'limit_usd' is required.")
    limit = money(data["limit_usd"], "limit_usd")
    soft = integer(data, "soft_limit_pct", low=0, high=100, default=80)
    enforce = boolean(data, "enforce", default=True)
    result = await db.fetch_value(
        "put_budget",
        {
            "org_id": key.org_id,
            "strict": key.strict,
            "scope": scope,
            "subject": subject,
            "period": period,
            "limit_usd": limit,
            "soft_limit_pct": soft,
            "enforce": enforce,
            "at": None,
            "model": model,
            **_audit_params(request, key),
        },
    )
    if result["status"] == "not_found":
        raise ApiError(404, "not_found", f"Unknown {scope} '{subject}'.")
    return 200, result["budget"]


async def delete_budget(request: Request) -> Answer:
    key = _require_admin(request)
    scope, subject, period, model = _budget_path(request, key)
    result = await db.fetch_value(
        "delete_budget",
        {
            "org_id": key.org_id,
            "scope": scope,
            "subject": subject,
            "period": period,
            "model": model,
            **_audit_params(request, key),
        },
    )
    if result["status"] == "not_found":
        of_model = f" of model filter '{model}'" if model else ""
        raise ApiError(404, "not_found", f"No {period} budget{of_model} for {scope} '{subject}'.")
    return 204, None


# --- Probes ------------------------------------------------------------------------


async def healthz(request: Request) -> Answer:
    return 200, {"status": "ok"}


async def prometheus_metrics(request: Request) -> Response:
    try:
        alerts = await db.fetch_value("alert_counts", {})
    except db.StoreUnavailable:
        alerts = None  # the process's own metrics still answer during an outage
    return Response(200, metrics.render(alerts), {"content-type": CONTENT_TYPE_LATEST})


async def readyz(request: Request) -> Answer:
    if await db.aping():
        return 200, {"status": "ready"}
    return 503, {
        "error": {"code": "store_unavailable", "message": "The database is not reachable."}
    }


async def sweep_expired_reservations() -> None:
    """Expired holds stop counting without anyone running a command: every
    process sweeps every RESERVATION_SWEEP_SECONDS (jittered so that workers
    spread out; the SQL skips rows another sweeper holds)."""
    interval = settings.RESERVATION_SWEEP_SECONDS
    while True:
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))
        try:
            expired = await db.fetch_value("expire_reservations", {"limit": 1000})
            if expired:
                logger.info("expired %s reservations", expired)
        except db.StoreUnavailable:
            logger.warning("reservation sweep skipped: database unavailable")
        except Exception:
            logger.exception("reservation sweep failed")
