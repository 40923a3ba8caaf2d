"""The bodies of budget decisions (check, reservations, status), validated
field by field before the database sees them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from budgets import labels
from budgets.auth import ApiKeyInfo
from config.hotpath.errors import invalid
from config.hotpath.inputs import MAX_TOKENS, identifier, integer, money

SCOPES = ("org", "team", "user", "key", "tag")
# Service tiers as the providers name them in a response (OpenAI's
# `service_tier`, Anthropic's `usage.service_tier`) -> the price tier.
SERVICE_TIERS = {
    "auto": "",
    "default": "",
    "standard": "",
    "flex": "flex",
    "priority": "priority",
    "batch": "batch",
}
PERIODS = ("day", "week", "month", "total")
DEFAULT_TTL_SECONDS = 300
MAX_TTL_SECONDS = 3600


@dataclass(frozen=True)
class Decision:
    team: str | None
    user: str | None
    model: str | None
    amount: Decimal | None
    input_tokens: int | None
    max_output_tokens: int | None
    ttl_seconds: int
    service_tier: str = ""
    tags: dict[str, str] | None = None


def price_tier(data: dict[str, Any], prefix: str = "") -> str:
    """The price tier of a request: its `service_tier` (as the provider's
    response says it) and its `batch` flag (a Batch API request). '' is the
    standard tier; unknown tiers and a batch of flex or priority are a 422."""
    tier_field, batch_field = f"{prefix}service_tier", f"{prefix}batch"
    given = data.get("service_tier")
    if given is None:
        tier = ""
    elif not isinstance(given, str) or given.lower() not in SERVICE_TIERS:
        raise invalid(
            tier_field,
            f"'{tier_field}' must be one of {', '.join(SERVICE_TIERS)}.",
        )
    else:
        tier = SERVICE_TIERS[given.lower()]
    batch = data.get("batch")
    if batch is None or batch is False:
        return tier
    if batch is not True:
        raise invalid(batch_field, f"'{batch_field}' must be true or false.")
    if tier not in ("", "batch"):
        raise invalid(
            batch_field, f"A batch request has no service tier '{given}' ('{tier_field}')."
        )
    return "batch"


def tags(value: Any, field: str = "tags") -> dict[str, str]:
    """A `tags` object of an event, a check or a hold (budgets/labels.py's
    rule); raises a 422 naming the field, or the tag (`tags.<name>`)."""
    if value is None:
        return {}
    problem = labels.tags_problem(value)
    if problem is None:
        return value
    name, why = problem
    if name is None:
        raise invalid(field, f"'{field}' {why}")
    raise invalid(f"{field}.{name}"[:200], why)


def tag_pair(value: str, field: str) -> str:
    """A tag budget's subject, `name=value`."""
    if labels.split_tag(value) is None:
        raise invalid(field, f"'{field}' must be a tag as name=value. {labels.TAG_RULE}")
    return value


def model_pattern(value: str | None, field: str = "model") -> str:
    """A budget's model filter, lower-cased ('' when absent: every model)."""
    if value is None:
        return ""
    pattern = labels.normalize_model_pattern(value)
    if not labels.is_model_pattern(pattern):
        raise invalid(field, f"'{field}' must be {labels.MODEL_PATTERN_RULE}.")
    return pattern


def decision(data: dict[str, Any], *, key: ApiKeyInfo, require_amount: bool) -> Decision:
    """The body of check and reservations (API.md)."""
    team = identifier(data, "team")
    user = identifier(data, "user")
    model = identifier(data, "model")
    team = key.acting_team(team)
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
    return Decision(
        team,
        user,
        model,
        amount,
        input_tokens,
        max_output_tokens,
        ttl_seconds(data),
        price_tier(data),
        tags(data.get("tags")) or None,
    )


def ttl_seconds(data: dict[str, Any]) -> int:
    """A hold's time to live, for a reservation and for its extension."""
    ttl = integer(data, "ttl_seconds", low=1, high=MAX_TTL_SECONDS, default=DEFAULT_TTL_SECONDS)
    assert ttl is not None
    return ttl
