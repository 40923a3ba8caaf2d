"""What the client sends and what it returns.

Requests are `TypedDict`s (they go to the server as JSON); answers are frozen
dataclasses with money as `Decimal` and times as `datetime`, each keeping the
answer's JSON as `raw` so that fields added to the API later are reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, NotRequired, TypedDict

from tollgate_client._parse import decimal_or_none, time_or_none

Money = Decimal | str | int
FailurePolicy = Literal["refuse", "allow"]


class Estimate(TypedDict):
    """Tokens the server prices for `model` into a hold's amount."""

    input_tokens: int
    max_output_tokens: NotRequired[int]


class Event(TypedDict, total=False):
    """One event of ``POST /v1/events`` (docs/api.md). `id` is filled in with a
    new UUID when absent; the same id is sent on every retry."""

    id: str
    team: str
    user: str
    model: str
    provider: str
    usage: dict[str, Any]
    cost_usd: Money
    latency_ms: int
    status: Literal["ok", "error"]
    started_at: str | datetime
    reservation_id: str
    tags: dict[str, str]
    final: bool


@dataclass(frozen=True)
class Budget:
    scope: str
    id: str
    period: str
    limit_usd: Decimal | None
    spent_usd: Decimal | None
    reserved_usd: Decimal | None
    remaining_usd: Decimal | None
    resets_at: datetime | None
    enforce: bool
    used_pct: Decimal | None
    soft_limit_pct: int | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    # GET /v1/budgets only (docs/forecasts.md): spend projected at the window's
    # end, and when it runs out; None where the server gives none.
    projected_usd: Decimal | None = None
    runs_out_at: datetime | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Budget:
        return cls(
            scope=data.get("scope", ""),
            id=data.get("id", ""),
            period=data.get("period", ""),
            limit_usd=decimal_or_none(data.get("limit_usd")),
            spent_usd=decimal_or_none(data.get("spent_usd")),
            reserved_usd=decimal_or_none(data.get("reserved_usd")),
            remaining_usd=decimal_or_none(data.get("remaining_usd")),
            resets_at=time_or_none(data.get("resets_at")),
            enforce=bool(data.get("enforce", True)),
            used_pct=decimal_or_none(data.get("used_pct")),
            soft_limit_pct=data.get("soft_limit_pct"),
            raw=data,
            projected_usd=decimal_or_none(data.get("projected_usd")),
            runs_out_at=time_or_none(data.get("runs_out_at")),
        )


@dataclass(frozen=True)
class BudgetWarning:
    scope: str
    id: str
    period: str
    used_pct: Decimal | None
    enforce: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BudgetWarning:
        return cls(
            scope=data.get("scope", ""),
            id=data.get("id", ""),
            period=data.get("period", ""),
            used_pct=decimal_or_none(data.get("used_pct")),
            enforce=bool(data.get("enforce", True)),
        )


def _budgets(data: dict[str, Any]) -> list[Budget]:
    return [Budget.from_json(b) for b in data.get("budgets") or [] if isinstance(b, dict)]


def _warnings(data: dict[str, Any]) -> list[BudgetWarning]:
    return [BudgetWarning.from_json(w) for w in data.get("warnings") or [] if isinstance(w, dict)]


@dataclass(frozen=True)
class Decision:
    """The answer of a check. `degraded` is true when nothing was decided:
    Tollgate failed open, or did not answer and the client's policy is "allow"."""

    allowed: bool
    estimated_cost_usd: Decimal | None
    budgets: list[Budget]
    warnings: list[BudgetWarning]
    blocked_by: dict[str, Any] | None
    degraded: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        return cls(
            allowed=bool(data.get("allowed")),
            estimated_cost_usd=decimal_or_none(data.get("estimated_cost_usd")),
            budgets=_budgets(data),
            warnings=_warnings(data),
            blocked_by=data.get("blocked_by"),
            degraded=bool(data.get("degraded", False)),
            raw=data,
        )


@dataclass(frozen=True)
class Reservation:
    """A hold. `reservation_id` is None when nothing is held (`degraded`).
    `team`, `user`, `model` and `tags` are what was asked, kept so that the
    event settling the hold is attributed the same way."""

    reservation_id: str | None
    amount_usd: Decimal | None
    expires_at: datetime | None
    budgets: list[Budget]
    warnings: list[BudgetWarning]
    degraded: bool
    team: str | None = None
    user: str | None = None
    model: str | None = None
    tags: dict[str, str] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(
        cls,
        data: dict[str, Any],
        *,
        team: str | None = None,
        user: str | None = None,
        model: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> Reservation:
        return cls(
            reservation_id=data.get("reservation_id"),
            amount_usd=decimal_or_none(data.get("amount_usd")),
            expires_at=time_or_none(data.get("expires_at")),
            budgets=_budgets(data),
            warnings=_warnings(data),
            degraded=bool(data.get("degraded", False)),
            team=team,
            user=user,
            model=model,
            tags=tags,
            raw=data,
        )


@dataclass(frozen=True)
class Release:
    """`status`: released, settled, expired, closed; "unknown" when Tollgate did
    not answer and the policy is "allow" (the hold then expires on its TTL)."""

    reservation_id: str | None
    status: str
    released: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Release:
        return cls(
            reservation_id=data.get("reservation_id"),
            status=str(data.get("status", "")),
            released=bool(data.get("released", False)),
            raw=data,
        )


@dataclass(frozen=True)
class Extension:
    reservation_id: str | None
    status: str
    expires_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Extension:
        return cls(
            reservation_id=data.get("reservation_id"),
            status=str(data.get("status", "")),
            expires_at=time_or_none(data.get("expires_at")),
            raw=data,
        )


@dataclass(frozen=True)
class EventResult:
    """One event's result. `queued` is true when Tollgate did not answer and the
    event waits in the client's queue for `flush()` (nothing else is known yet)."""

    id: str
    cost_usd: Decimal | None
    priced: bool | None
    duplicate: bool
    reservation: dict[str, Any] | None
    queued: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventResult:
        reservation = data.get("reservation")
        return cls(
            id=str(data.get("id", "")),
            cost_usd=decimal_or_none(data.get("cost_usd")),
            priced=data.get("priced"),
            duplicate=bool(data.get("duplicate", False)),
            reservation=reservation if isinstance(reservation, dict) else None,
            raw=data,
        )

    @classmethod
    def deferred(cls, event_id: str) -> EventResult:
        return cls(
            id=event_id, cost_usd=None, priced=None, duplicate=False, reservation=None, queued=True
        )


@dataclass(frozen=True)
class Status:
    budgets: list[Budget]
    warnings: list[BudgetWarning]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Status:
        return cls(budgets=_budgets(data), warnings=_warnings(data), raw=data)


@dataclass(frozen=True)
class FlushResult:
    sent: int
    remaining: int
