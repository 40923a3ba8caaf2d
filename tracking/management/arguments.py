"""Argument types of the tracking commands: moments (--since) and ages (--older-than)."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, time, timedelta

from django.utils.dateparse import parse_date, parse_datetime

_AGE = re.compile(r"^(\d+)([dh])$")
_MAX_AGE = timedelta(days=36_500)


def moment(value: str) -> datetime:
    """A date (midnight UTC) or an ISO-8601 date-time (UTC unless it has an offset)."""
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            parsed = None if day is None else datetime.combine(day, time.min)
    except ValueError:
        parsed = None
    if parsed is None:
        raise argparse.ArgumentTypeError(
            f"'{value}' is not a date (2026-11-01) or an ISO-8601 date-time (2026-11-01T10:00:00Z)"
        )
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def age(value: str) -> timedelta:
    """A positive number of days or hours: 90d, 36h."""
    match = _AGE.match(value.strip())
    try:
        amount = int(match[1]) if match else 0
        result = timedelta(days=amount) if match and match[2] == "d" else timedelta(hours=amount)
    except OverflowError:
        result = timedelta(0)
    if not timedelta(0) < result <= _MAX_AGE:
        raise argparse.ArgumentTypeError(
            f"'{value}' is not an age like 90d (days) or 36h (hours), above zero and "
            "at most 100 years"
        )
    return result
