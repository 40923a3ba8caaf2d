"""Hypothesis strategies for values that each field of the API must refuse,
and a JSON writer that can spell what no JSON encoder writes.

Every strategy here draws only values that are invalid for its field, so a
request built from a valid body with one such value must be rejected: the
suite can then demand a 4xx naming the field and no write at all. Values that
break the JSON text itself (NaN, a 5000-digit number, an unterminated
string) are `Raw(..., malformed=True)`: they turn the answer into 400.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hypothesis import strategies as st

MIB = 1024 * 1024


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is (tokens an encoder refuses to write)."""

    text: str
    malformed: bool = False  # the body is no longer JSON: 400 malformed_json


@dataclass(frozen=True)
class Pairs:
    """A JSON object written pair by pair, so that a name may repeat."""

    items: tuple[tuple[str, Any], ...]


class _Special(Exception):
    pass


def _special(value: Any) -> Any:
    raise _Special


def encode(value: Any) -> str:
    """JSON text of `value`; str escapes lone surrogates and controls as \\uXXXX."""
    try:
        # Most bodies hold no Raw or Pairs: the C encoder writes them at once.
        return json.dumps(value, default=_special, allow_nan=False)
    except (_Special, ValueError):
        return _encode(value)


def encode_checked(value: Any) -> tuple[str, bool]:
    """(JSON text, whether it is malformed), walking the value only when it
    holds Raw or Pairs."""
    try:
        return json.dumps(value, default=_special, allow_nan=False), False
    except (_Special, ValueError):
        return _encode(value), is_malformed(value)


def _encode(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{_encode(k)}:{_encode(v)}" for k, v in value.items) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_encode(k)}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value)
    raise TypeError(type(value))


def is_malformed(value: Any) -> bool:
    if isinstance(value, Raw):
        return value.malformed
    if isinstance(value, Pairs):
        names = [k for k, _ in value.items]
        return len(set(names)) < len(names) or any(is_malformed(v) for _, v in value.items)
    if isinstance(value, dict):
        return any(is_malformed(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(is_malformed(v) for v in value)
    return False


# --- Building blocks ---------------------------------------------------------------

SQL = [
    "'; DROP TABLE budgets_budget; --",
    "' OR '1'='1",
    '"; DELETE FROM tracking_requestevent; --',
    "1); UPDATE budgets_budgetwindow SET spent = 0; --",
    "$$; SELECT pg_sleep(10); $$",
    "%(org_id)s",
    "%s%s%s",
    "admin'--",
    "1e1; TRUNCATE budgets_reservation",
    "\\x00",
    "E'\\\\000'",
    "{{7*7}}",
    "${jndi:ldap://127.0.0.1/a}",
]
SQL_TEXT = st.sampled_from(SQL)

# Printable text without C0 controls, DEL or surrogates: what identifiers may hold.
SAFE_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_characters="\x7f"),
    max_size=12,
)
CONTROL = st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f"])
SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)


@functools.cache  # built once: hypothesis checks each new strategy
def around(middle: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Safe text with `middle` somewhere inside."""
    return st.tuples(st.one_of(SAFE_TEXT, SQL_TEXT), middle, SAFE_TEXT).map("".join)


WITH_CONTROL = around(CONTROL)  # NUL included: PostgreSQL text cannot hold it
WITH_SURROGATE = around(SURROGATE)  # "\ud800": not UTF-8, the driver cannot send it


@functools.cache  # built once: hypothesis checks each new strategy
def longer_than(limit: int) -> st.SearchStrategy[str]:
    """Up to 1 MB of text (past 1 MiB of body the answer is 413, not 422).
    "é" is written as a 6-byte escape: 300,000 of them make 1.8 MB."""
    return st.one_of(
        st.sampled_from([limit + 1, limit + 7, 4 * limit, 70_000, 1_000_000]).map(
            lambda n: "x" * n
        ),
        st.sampled_from([limit + 1, 20_000, 300_000]).map(lambda n: "é" * n),
        st.sampled_from([limit + 1, 5_000]).map(lambda n: ("' OR 1=1 --" * n)[:n]),
    )


# Tokens that make the body not JSON (the server must answer 400).
MALFORMED_TOKENS = st.sampled_from(
    [
        Raw("NaN", True),
        Raw("Infinity", True),
        Raw("-Infinity", True),
        Raw("nan", True),
        Raw("undefined", True),
        Raw("1" + "0" * 5000, True),  # longer than Python's int parsing limit
        Raw("-" + "9" * 4400, True),
        Raw("1e999999999999999999999", True),  # beyond Decimal's exponent range
        Raw("0x10", True),
        Raw("01", True),
        Raw("+1", True),
        Raw(".5", True),
        Raw("'single'", True),
        Raw('"\\ud800', True),  # unterminated string
        Raw('"\\x41"', True),  # invalid escape
        Raw('"a\nb"', True),  # raw control character inside a string
        Raw('"\\u12"', True),
        Raw("[1,]", True),
        Raw("{,}", True),
    ]
)

# Numbers that are valid JSON but no identifier, flag or string field takes.
ODD_NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30),
    st.just(10**100),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [Raw("1e400"), Raw("-1e400"), Raw("-0"), Raw("-0.0"), Raw("1E+2"), Raw("1e-400")]
    ),
)
CONTAINERS = st.one_of(
    st.lists(st.integers(), max_size=3),
    st.dictionaries(SAFE_TEXT, st.integers(), max_size=3),
    st.just([[[[[]]]]]),
)
NOT_A_STRING = st.one_of(ODD_NUMBERS, st.booleans(), CONTAINERS)


@functools.cache  # built once: hypothesis checks each new strategy
def bad_identifier(max_length: int = 128) -> st.SearchStrategy[Any]:
    """Never valid for a 1-`max_length` character identifier (null excluded:
    it means 'absent', which is valid for optional fields)."""
    return st.one_of(
        NOT_A_STRING,
        st.just(""),
        longer_than(max_length),
        WITH_CONTROL,
        WITH_SURROGATE,
        MALFORMED_TOKENS,
    )


# A decimal string as API.md means it: sign, ASCII digits, point, exponent.
DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)

NOT_DECIMAL_TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            "abc",
            "1,5",
            "NaN",
            "nan",
            "sNaN",
            "Infinity",
            "-Infinity",
            "inf",
            "0x10",
            "1_000",  # Python's Decimal takes it; a decimal string does not
            "١٢",  # Arabic-Indic digits: Decimal takes them too
            " 1",
            "1 ",
            "\t2",
            "--1",
            "1-",
            "$1",
            "1 USD",
            "0.5.5",
            "1e",
            "e1",
            "\x001",
            "1\x00",
            "1\ud800",
        ]
    ),
    SQL_TEXT,
    SAFE_TEXT.filter(lambda s: DECIMAL.fullmatch(s) is None),
)
TOO_MUCH_MONEY = st.one_of(
    st.integers(10**9 + 1, 10**40),
    st.just(10**100),
    st.integers(10**9 + 1, 10**40).map(str),
    st.sampled_from(
        [
            Raw("1e400"),
            Raw("1E+10"),
            Raw("1000000000.0000000001"),
            "1e10",
            "1000000000.0000000001",
            "1" * 41,
            "1e999999999999999999999",
        ]
    ),
)
NEGATIVE_MONEY = st.one_of(
    st.integers(max_value=-1),
    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
    st.sampled_from([Raw("-0.01"), Raw("-1e-10"), "-1", "-0.0000000001", "-1e-5"]),
)


@functools.cache  # built once: hypothesis checks each new strategy
def bad_money() -> st.SearchStrategy[Any]:
    """Never a valid amount (null excluded: optional amounts may be absent)."""
    return st.one_of(
        st.booleans(),
        CONTAINERS,
        NOT_DECIMAL_TEXT,
        TOO_MUCH_MONEY,
        NEGATIVE_MONEY,
        MALFORMED_TOKENS,
    )


@functools.cache  # built once: hypothesis checks each new strategy
def bad_integer(low: int, high: int) -> st.SearchStrategy[Any]:
    """Never an integer in [low, high] (null excluded: it means the default)."""
    below = [st.integers(low - 10**12, low - 1)] if low > -(10**30) else []
    if low > 0:
        below.append(st.just(Raw("-0")))
    return st.one_of(
        *below,
        st.integers(high + 1, high + 10**30),
        st.just(10**100),
        st.booleans(),
        st.integers(low, high).map(str),
        st.integers(low, high).map(lambda n: Raw(f"{n}.0")),
        st.sampled_from([Raw("1.5"), Raw("1e2"), Raw("1E0"), Raw("1e400"), Raw("0.0")]),
        CONTAINERS,
        SAFE_TEXT,
        MALFORMED_TOKENS,
    )


@functools.cache  # built once: hypothesis checks each new strategy
def bad_boolean() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        ODD_NUMBERS,
        st.sampled_from(["true", "false", "yes", "1", ""]),
        SAFE_TEXT,
        CONTAINERS,
        MALFORMED_TOKENS,
    )


@functools.cache  # built once: hypothesis checks each new strategy
def not_one_of(choices: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        NOT_A_STRING,
        st.sampled_from([c.upper() for c in choices] + [c + " " for c in choices]),
        SAFE_TEXT.filter(lambda s: s not in choices),
        WITH_CONTROL,
        MALFORMED_TOKENS,
    )


# ISO-8601 times an event may not carry: no offset, before 2000, far future,
# not a time at all.
_NAIVE = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2025, 12, 31))
_OFFSETS = st.sampled_from(["Z", "+00:00", "-23:59", "+23:59", "+05:30"])
BAD_TIMES = st.one_of(
    _NAIVE.map(lambda d: d.isoformat()),
    st.tuples(st.integers(1, 1999), _OFFSETS).map(lambda t: f"{t[0]:04d}-06-15T12:00:00{t[1]}"),
    st.tuples(st.integers(2100, 9999), _OFFSETS).map(lambda t: f"{t[0]:04d}-12-31T23:59:59{t[1]}"),
    st.sampled_from(
        [
            "",
            "yesterday",
            "now",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-03-10T25:00:00Z",
            "2026-03-10T12:00:00+99:00",
            "2026-03-10T12:00:00Z" + " " * 30,
            # Python 3.11's fromisoformat stops reading at a NUL.
            "2026-03-10T12:00:00Z\x00",
            "2026-03-10T12:00:00+00:00\x00; DROP TABLE budgets_budget",
            "2026-03-10T12:00:00\ud800Z",
            "٢٠٢٦-03-10T12:00:00Z",
        ]
    ),
    SQL_TEXT,
    st.integers(),
    st.booleans(),
    CONTAINERS,
    MALFORMED_TOKENS,
)
