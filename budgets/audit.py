"""The audit log's sync side: who acts (`Actor`) and `audit_record`, which
writes one `AuditEntry` in the transaction of the change it records.

Changes through the API are recorded by their SQL function instead
(`tollgate_audit`, budgets/sql/functions/30_budgets.sql), in the one
statement that makes the change. The values recorded here have the shapes
the SQL writes, so that a budget's history reads alike whichever way it
was changed.
"""

from __future__ import annotations

import getpass
import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.http import HttpRequest

from budgets.models import ApiKey, AuditEntry, Budget, Organization, Team
from config import logging as log_context
from config.hotpath.inputs import usd_text

JsonValues = dict[str, Any]


@dataclass(frozen=True)
class Actor:
    """Who makes a change, and through which request."""

    kind: str  # AuditEntry.ActorKind
    key_id: int | None = None
    user_id: int | None = None
    label: str = ""
    request_id: str = ""
    client_addr: str | None = None

    @classmethod
    def of_request(cls, request: HttpRequest) -> Actor:
        """The signed-in login of a Django request (admin, dashboard)."""
        user = request.user
        return cls(
            kind=AuditEntry.ActorKind.USER,
            user_id=user.pk,
            label=user.get_username()[:200],
            request_id=_request_id(),
            client_addr=client_address(request.META.get("REMOTE_ADDR")),
        )

    @classmethod
    def of_key(cls, key: ApiKey, request: HttpRequest) -> Actor:
        """An API key, through a Django request (the JSON views); labelled as
        the hot path's tollgate_audit labels keys."""
        name = f" ({key.name})" if key.name else ""
        return cls(
            kind=AuditEntry.ActorKind.KEY,
            key_id=key.pk,
            label=f"key {key.lookup_id}{name}"[:200],
            request_id=_request_id(),
            client_addr=client_address(request.META.get("REMOTE_ADDR")),
        )

    @classmethod
    def command(cls, name: str) -> Actor:
        """A management command, with the operating-system user who ran it."""
        try:
            who = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            who = "?"
        return cls(kind=AuditEntry.ActorKind.COMMAND, label=f"{name} (by {who})"[:200])


# Changes made by code with no one behind them (tests' fixtures, seeding).
SYSTEM = Actor(kind=AuditEntry.ActorKind.SYSTEM, label="system")


def _request_id() -> str:
    current = log_context.request_id.get()
    return "" if current == "-" else current


def client_address(value: str | None) -> str | None:
    """An IP address, or None for anything else (a unix socket, a test client)."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def audit_record(
    *,
    actor: Actor,
    org: Organization | None,
    object_type: str,
    object_id: str,
    action: str,
    old: JsonValues | None = None,
    new: JsonValues | None = None,
) -> AuditEntry | None:
    """Record one change; None when an update changed nothing (no entry).

    Must run inside the transaction that makes the change, so that the entry
    commits or rolls back with it."""
    if action == "update" and old == new:
        return None
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("An audit entry is written in the transaction of its change.")
    return AuditEntry.objects.create(
        org=org,
        actor_kind=actor.kind,
        actor_key_id=actor.key_id,
        actor_user_id=actor.user_id,
        actor_label=actor.label,
        object_type=object_type,
        object_id=object_id[:400],
        action=action,
        old=old,
        new=new,
        request_id=actor.request_id,
        client_addr=actor.client_addr,
    )


# --- What each kind of object records ---------------------------------------------


def json_value(value: Any) -> Any:
    """A field's value as the log stores it: money as the API writes it."""
    if isinstance(value, Decimal):
        return usd_text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def budget_address(budget: Budget) -> str:
    """A budget's name in the API: scope/subject/period, as in its URL, with
    its model filter as the URL's query (tollgate_budget_address)."""
    model = f"?model={budget.model_filter}" if budget.model_filter else ""
    return f"{budget.scope}/{budget.subject_id}/{budget.period}{model}"


def budget_values(budget: Budget) -> JsonValues:
    # The keys tollgate_budget_audit_values writes for the API's changes.
    values: JsonValues = {
        "scope": budget.scope,
        "subject": budget.subject_id,
        "period": budget.period,
        "limit_usd": usd_text(budget.limit_usd),
        "soft_limit_pct": budget.soft_limit_pct,
        "enforce": budget.enforce,
    }
    if budget.model_filter:
        values["model"] = budget.model_filter
    return values


def organization_values(org: Organization) -> JsonValues:
    """Every setting of the organization: a new one is recorded without a
    change here. The webhook URL is recorded without its secret part."""
    values = {
        field.attname: json_value(getattr(org, field.attname))
        for field in Organization._meta.concrete_fields
        if field.name not in ("id", "created_at")
    }
    values["webhook_url"] = redacted_url(org.webhook_url)
    return values


def redacted_url(url: str) -> str:
    """Scheme and host, and a fingerprint of the rest: a webhook's path often
    is its credential (Slack's hooks.slack.com/services/T…/B…/secret), and the
    log is read by every admin key of the org. Equal URLs give equal texts,
    so a change still shows."""
    if not url:
        return ""
    parts = urlsplit(url)
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{parts.scheme}://{parts.hostname or ''}/… (sha256 {digest})"


def api_key_values(key: ApiKey) -> JsonValues:
    # Never the hash; the lookup id is the key's public part.
    return {
        "lookup_id": key.lookup_id,
        "name": key.name,
        "team": key.team.slug if key.team_id else None,
        "is_admin": key.is_admin,
        "max_request_usd": json_value(key.max_request_usd),
        "allowed_models": list(key.allowed_models),
        "revoked_at": json_value(key.revoked_at),
    }


def team_values(team: Team) -> JsonValues:
    """A team's settings as the log records them (PATCH /v1/teams/{slug})."""
    return {
        "slug": team.slug,
        "name": team.name,
        "max_request_usd": json_value(team.max_request_usd),
        "allowed_models": list(team.allowed_models),
    }
