"""Validation of hot-path request bodies: every field is checked in Python
before the database sees it, so bad input gets a 422 naming the field, never
a database error (e.g. Postgres text cannot hold NUL)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from budgets.errors import ApiError, invalid

MAX_ID_LENGTH = 128
# numeric(20, 10) holds up to 10^10; leave headroom for sums.
MAX_USD = Decimal("1000000000")
MAX_TOKENS = 1_000_000_000
MONEY_QUANTUM = Decimal("0.0000000001")
SCOPES = ("org", "team", "user")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
PERIODS = ("day", "week", "month", "total")
# A decimal string: sign, ASCII digits, point, exponent. Python's Decimal also
# takes "1_000", " 1 " and other scripts' digits ("١٢"); API.md's amounts do not.
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def identifier(data: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise invalid(name, f"'{name}' is required.")
        return None
    if not isinstance(value, str):
        raise invalid(name, f"'{name}' must be a string.")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise invalid(name, f"'{name}' must be 1 to {MAX_ID_LENGTH} characters long.")
    if _CONTROL.search(value):
        raise invalid(name, f"'{name}' must not contain control characters.")
    if not value.isascii() and _SURROGATE.search(value):
        # JSON's "\ud800" escape decodes to a lone surrogate, which is not
        # UTF-8 and would fail in the database driver.
        raise invalid(name, f"'{name}' must be valid Unicode text.")
    return value


def money(value: Any, name: str) -> Decimal:
    """A non-negative USD amount from a JSON number or decimal string, rounded
    up to 10 decimal places (a hold is never smaller than asked)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise invalid(name, f"'{name}' must be a number or a decimal string.")
    if isinstance(value, str) and (len(value) > 40 or not _DECIMAL.fullmatch(value)):
        raise invalid(name, f"'{name}' must be a decimal number of US dollars.")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise invalid(name, f"'{name}' must be a decimal number of US dollars.") from None
    if not amount.is_finite():
        raise invalid(name, f"'{name}' must be a finite number.")
    if amount < 0:
        raise invalid(name, f"'{name}' must not be negative.")
    if amount > MAX_USD:
        raise invalid(name, f"'{name}' must be at most {MAX_USD}.")
    return amount.quantize(MONEY_QUANTUM, rounding=ROUND_CEILING)


def integer(
    data: dict[str, Any],
    name: str,
    *,
    low: int,
    high: int,
    default: int | None = None,
    path: str | None = None,
) -> int | None:
    value = data.get(name)
    label = path or name
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(label, f"'{label}' must be an integer.")
    if not low <= value <= high:
        raise invalid(label, f"'{label}' must be between {low} and {high}.")
    return value


def boolean(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise invalid(name, f"'{name}' must be true or false.")
    return value


@dataclass(frozen=True)
class Decision:
    team: str | None
    user: str | None
    model: str | None
    amount: Decimal | None
    input_tokens: int | None
    max_output_tokens: int | None
    ttl_seconds: int


def decision(data: dict[str, Any], *, key_team: str | None, require_amount: bool) -> Decision:
    """The body of check and reservations (API.md)."""
    team = identifier(data, "team")
    user = identifier(data, "user")
    model = identifier(data, "model")
    if key_team is not None:
        if team is None:
            team = key_team
        elif team != key_team:
            raise ApiError(
                403, "forbidden", "This API key is limited to another team.", field="team"
            )
    amount = None
    input_tokens = max_output_tokens = None
    if data.get("estimated_cost_usd") is not None:
        amount = money(data["estimated_cost_usd"], "estimated_cost_usd")
    elif data.get("estimate") is not None:
        estimate = data["estimate"]
        if not isinstance(estimate, dict):
            raise invalid("estimate", "'estimate' must be an object.")
        input_tokens = integer(
            estimate, "input_tokens", low=0, high=MAX_TOKENS, path="estimate.input_tokens"
        )
        if input_tokens is None:
            raise invalid("estimate.input_tokens", "'estimate.input_tokens' is required.")
        max_output_tokens = integer(
            estimate,
            "max_output_tokens",
            low=0,
            high=MAX_TOKENS,
            default=0,
            path="estimate.max_output_tokens",
        )
        if model is None:
            raise invalid("model", "'model' is required to price an estimate.")
    elif require_amount:
        raise invalid(
            "estimated_cost_usd", "Send 'estimated_cost_usd' or 'estimate' to say how much to hold."
        )
    ttl = integer(data, "ttl_seconds", low=1, high=3600, default=300)
    assert ttl is not None
    return Decision(team, user, model, amount, input_tokens, max_output_tokens, ttl)
