"""What a dashboard shows: its period (range, and the dates of a custom one)
and its filters (team, user, model, tag), read from a query string.

One reader for the summary endpoint, the holds endpoint, the page and the
export, so that each accepts and refuses the same parameters with the same
error (422 naming the field, in the API's shape).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from budgets import labels
from config.hotpath import inputs
from config.hotpath.errors import ApiError, invalid

RANGES = ("24h", "7d", "30d", "mtd", "last_month", "custom")
DEFAULT_RANGE = "7d"
# Days a custom range may span (both ends included): a leap year. Longer
# spans would read more than a year of daily rollups for one summary.
MAX_CUSTOM_DAYS = 366
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Selection:
    range: str
    from_date: date | None  # a custom range's first local day
    to_date: date | None  # its last local day, included
    team: str | None
    user: str | None  # an end user's external id
    model: str | None  # a model name as events carry it
    # The tag whose values the summary breaks the spend down by (a name the
    # org reports on; tollgate_dashboard_tags), or None.
    group_tag: str | None = None
    # The tag filter `tag=name=value`: only spend, requests and holds that
    # carry that tag (a name the org reports on: the tag rollups keep only
    # those). Both None without one.
    tag_name: str | None = None
    tag_value: str | None = None

    @property
    def tag(self) -> str | None:
        """The tag filter as the URL and tag budgets write it, name=value."""
        return None if self.tag_name is None else f"{self.tag_name}={self.tag_value}"

    def params(self) -> dict[str, Any]:
        """The summary statements' parameters (dashboard/sql/queries.sql)."""
        return {
            "range": self.range,
            "from_date": self.from_date,
            "to_date": self.to_date,
            "team": self.team,
            "user": self.user,
            "model": self.model,
            "group_tag": self.group_tag,
            "tag_name": self.tag_name,
            "tag_value": self.tag_value,
        }

    def query(self) -> dict[str, str]:
        """The query string that selects this again (empty values left out)."""
        values = {
            "range": self.range,
            "from": self.from_date.isoformat() if self.from_date else None,
            "to": self.to_date.isoformat() if self.to_date else None,
            "team": self.team,
            "user": self.user,
            "model": self.model,
            "group_tag": self.group_tag,
            "tag": self.tag,
        }
        return {name: value for name, value in values.items() if value}


def _date(query: Mapping[str, str], name: str) -> date | None:
    value = query.get(name) or None
    if value is None:
        return None
    if not _DATE.fullmatch(value):
        raise invalid(name, f"'{name}' must be a date written YYYY-MM-DD.")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise invalid(name, f"'{name}' must be a date written YYYY-MM-DD.") from None


def parse(query: Mapping[str, str]) -> Selection:
    """The selection a query string asks for; an empty value means absent.
    Raises ApiError 422 naming the first field that is wrong."""
    range_ = query.get("range") or DEFAULT_RANGE
    if range_ not in RANGES:
        raise invalid("range", f"'range' must be one of {', '.join(RANGES)}.")
    from_date, to_date = _date(query, "from"), _date(query, "to")
    if range_ == "custom":
        if from_date is None:
            raise invalid("from", "'from' (YYYY-MM-DD) is required with range=custom.")
        if to_date is None:
            raise invalid("to", "'to' (YYYY-MM-DD) is required with range=custom.")
        if from_date > to_date:
            raise invalid("to", "'to' must be the same day as 'from' or later.")
        if (to_date - from_date).days + 1 > MAX_CUSTOM_DAYS:
            raise invalid("to", f"A custom range spans at most {MAX_CUSTOM_DAYS} days.")
    elif from_date is not None or to_date is not None:
        name = "from" if from_date is not None else "to"
        raise invalid(name, f"'{name}' goes with range=custom only.")

    def identifier(name: str) -> str | None:
        return inputs.identifier({name: query.get(name) or None}, name)

    user = identifier("user")
    tag_name = tag_value = None
    tag = query.get("tag") or None
    if tag is not None:
        pair = labels.split_tag(tag)
        if pair is None:
            raise invalid("tag", f"'tag' must be a tag as name=value. {labels.TAG_RULE}")
        if user is not None:
            # The tag rollups, which hold a tag's spend past the raw events'
            # retention, keep no end user.
            raise invalid(
                "tag",
                "A tag filter cannot be combined with a user filter: tag usage keeps no end user.",
            )
        tag_name, tag_value = pair
    return Selection(
        range=range_,
        from_date=from_date,
        to_date=to_date,
        team=identifier("team"),
        user=user,
        model=identifier("model"),
        group_tag=identifier("group_tag"),
        tag_name=tag_name,
        tag_value=tag_value,
    )


def unreported(field: str, name: str) -> ApiError:
    """422 for a tag name the org does not report on (`tag`, `group_tag`):
    only reported names have tag rollups, which hold a tag's spend."""
    return invalid(
        field,
        f"The tag '{name[:64]}' is not one this organization reports on: an org admin "
        "marks the names to report on in report_tags (PATCH /v1/org, or Django admin).",
    )
