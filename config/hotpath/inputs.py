"""Validators of hot-path request fields: every field is checked in Python
before the database sees it, so bad input gets a 422 naming the field, never
a database error (e.g. Postgres text cannot hold NUL)."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from config.hotpath.errors import invalid

MAX_ID_LENGTH = 128
# numeric(20, 10) holds up to 10^10; leave headroom for sums.
MAX_USD = Decimal("1000000000")
MAX_TOKENS = 1_000_000_000
MONEY_QUANTUM = Decimal("0.0000000001")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
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


def usd_text(amount: Decimal) -> str:
    """Money as the API writes it: the exact decimal, without exponent or
    trailing zeros ("0.0004125", "12")."""
    return format(amount.normalize(), "f")


def usd_for_people(amount: Decimal) -> str:
    """Money as people read it: "$1,234.50", "$0.27"; an amount under a cent
    keeps two significant digits ("$0.00041") so that it never reads as $0."""
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if 0 < amount < Decimal("0.01"):
        digits = 1 - amount.adjusted()  # places to the first significant digit, plus one
        rounded = amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
        if rounded < Decimal("0.01"):
            return f"{sign}${format(rounded.normalize(), 'f')}"
    return f"{sign}${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"
