"""GET /v1/audit (docs/api.md, "Audit log"): the audit log of the caller's
organization, newest first, for admin keys. A budget's history is the same
list filtered to it: `object=budget:team/search/day`. GET and PATCH /v1/org
(docs/api.md, "Organization settings"): the caller's org and its settings;
GET and PATCH /v1/teams/{slug} and /v1/keys/{lookup_id}: a team's and a
key's settings (caps and model allow-lists).

Sync Django views: reporting and rare changes, not the hot path.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpResponse, JsonResponse, QueryDict

from budgets import inputs
from budgets.audit import Actor, redacted_url
from budgets.auth import ApiKeyInfo, authenticate
from budgets.models import ApiKey, AuditEntry, Organization, Team
from budgets.selectors import AuditQuery, audit_entries
from budgets.services import api_key_update, organization_update, team_update
from config.hotpath.errors import ApiError, invalid
from config.hotpath.router import json_object
from config.hotpath.views import ApiRequest, django_api_view, moment_param

OBJECT_TYPES = ("budget", "organization", "team", "api_key", "membership")
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
_ACTION = re.compile(r"[a-z_]{1,32}")

api_get = django_api_view(authenticate=authenticate)


@api_get
def audit(request: ApiRequest) -> HttpResponse:
    key: ApiKeyInfo = request.api_key
    if not key.is_admin:
        raise ApiError(403, "forbidden", "Reading the audit log needs an admin API key.")
    query = audit_query(request.GET, key)
    entries = audit_entries(query)
    more = len(entries) > query.limit
    entries = entries[: query.limit]
    response = JsonResponse(
        {
            "entries": [_entry_json(entry) for entry in entries],
            "next_cursor": _cursor(entries[-1].pk) if more else None,
        }
    )
    response["Cache-Control"] = "no-store"
    return response


# --- Parameters ---------------------------------------------------------------------


def audit_query(params: QueryDict, key: ApiKeyInfo) -> AuditQuery:
    """The query asked for, or ApiError 422 naming the bad parameter (403 for
    a team-limited key asking for more than its team's budgets)."""
    start, end = moment_param(params, "from"), moment_param(params, "to")
    if start is not None and end is not None and end <= start:
        raise invalid("to", "'to' must be after 'from'.")
    object_type, object_id = _object(params)
    if key.team_slug is not None and not _own_team_budget(key.team_slug, object_type, object_id):
        raise ApiError(
            403,
            "forbidden",
            "A team-limited key may read only its team's budgets' history "
            f"(object=budget:team/{key.team_slug}/<period>).",
            field="object",
        )
    action = params.get("action")
    if action is not None and not _ACTION.fullmatch(action):
        raise invalid("action", "'action' must be an action name, e.g. update.")
    return AuditQuery(
        org_id=key.org_id,
        start=start,
        end=end,
        object_type=object_type,
        object_id=object_id,
        action=action,
        before_id=_cursor_id(params.get("cursor")),
        limit=_limit(params),
    )


def _object(params: QueryDict) -> tuple[str | None, str | None]:
    """`object=budget` (a type) or `object=budget:team/search/day` (one object)."""
    value = params.get("object")
    if value is None:
        return None, None
    object_type, sep, object_id = value.partition(":")
    if object_type not in OBJECT_TYPES:
        raise invalid(
            "object",
            f"'object' must be one of {', '.join(OBJECT_TYPES)}, optionally followed by "
            "':' and the object's id (budget:team/search/day).",
        )
    if not sep:
        return object_type, None
    if not 1 <= len(object_id) <= 400 or not object_id.isprintable():
        raise invalid("object", "The object's id after ':' must be 1 to 400 printable characters.")
    return object_type, object_id


def _own_team_budget(team: str, object_type: str | None, object_id: str | None) -> bool:
    """One of the team's budgets, model-filtered ones (`…/day?model=…`) included."""
    address = (object_id or "").split("?model=", 1)[0]
    return object_type == "budget" and address in {
        f"team/{team}/{period}" for period in inputs.PERIODS
    }


def _limit(params: QueryDict) -> int:
    value = params.get("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_LIMIT):
        raise invalid("limit", f"'limit' must be a whole number from 1 to {MAX_LIMIT}.")
    return int(value)


# The cursor is opaque to callers: the id of the last entry of the page, so
# that the next page starts below it whatever was recorded meanwhile.
def _cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"a1:{entry_id}".encode()).decode().rstrip("=")


def _cursor_id(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    prefix, _, number = text.partition(":")
    if prefix != "a1" or not (number.isascii() and number.isdigit() and len(number) <= 18):
        raise invalid("cursor", "'cursor' must be a next_cursor this endpoint returned.")
    return int(number)


# --- Answers ------------------------------------------------------------------------


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.pk,
        "at": _iso(entry.at),
        "actor": {
            "kind": entry.actor_kind,
            "key_id": entry.actor_key_id,
            "user_id": entry.actor_user_id,
            "label": entry.actor_label,
        },
        "object": {"type": entry.object_type, "id": entry.object_id},
        "action": entry.action,
        "old": entry.old,
        "new": entry.new,
        "request_id": entry.request_id,
        "client_addr": entry.client_addr,
    }


# --- GET / PATCH /v1/org ------------------------------------------------------------

# The settings an admin key may change, and how each is read from JSON; the
# model's validation (full_clean) then judges the values.
_TEXT = "text"
_FLAG = "flag"
_AMOUNT = "amount"
_MODELS = "models"
_TAG_NAMES = "tag_names"
_ORG_FIELDS = {
    "name": _TEXT,
    "time_zone": _TEXT,
    "strict": _FLAG,
    "fail_mode": _TEXT,
    "webhook_url": _TEXT,
    "max_request_usd": _AMOUNT,
    "alerts_count_holds": _FLAG,
    "unpriced_policy": _TEXT,
    "fallback_input_per_token": _AMOUNT,
    "fallback_output_per_token": _AMOUNT,
    "allowed_models": _MODELS,
    "report_tags": _TAG_NAMES,
}
_NULLABLE = {"max_request_usd", "fallback_input_per_token", "fallback_output_per_token"}

org_view = django_api_view(authenticate=authenticate, methods=("GET", "PATCH"))


@org_view
def organization(request: ApiRequest) -> HttpResponse:
    """The caller's organization and its settings; PATCH changes some of them
    (admin keys that are not team-limited), audited."""
    key: ApiKeyInfo = request.api_key
    if request.method == "PATCH":
        if not key.is_admin or key.team_slug is not None:
            raise ApiError(
                403, "forbidden", "Changing the organization needs an admin key of the whole org."
            )
        changes = _changes(json_object(request.body), _ORG_FIELDS)
        with _validation_as_422():
            org = organization_update(org_id=key.org_id, changes=changes, actor=_actor(request))
    else:
        org = Organization.objects.get(pk=key.org_id)
    response = JsonResponse({"organization": _org_json(org)})
    response["Cache-Control"] = "no-store"
    return response


def _changes(data: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """The settings a PATCH body changes, each read as its kind says; the
    model's validation then judges the values (_validation_as_422)."""
    if not data:
        raise ApiError(422, "invalid_field", "Name at least one setting to change.")
    changes: dict[str, Any] = {}
    for name, value in data.items():
        kind = fields.get(name)
        if kind is None:
            raise invalid(name, f"'{name}' is not a setting; settings: {', '.join(fields)}.")
        if value is None and name in _NULLABLE:
            changes[name] = None
        elif kind == _FLAG:
            if not isinstance(value, bool):
                raise invalid(name, f"'{name}' must be true or false.")
            changes[name] = value
        elif kind == _MODELS:
            # Entries are judged by the model (validate_allowed_models).
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                raise invalid(
                    name, f"'{name}' must be a list of model names or patterns ([] for any)."
                )
            changes[name] = value
        elif kind == _TAG_NAMES:
            # Names are judged by the model (validate_report_tags).
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise invalid(name, f"'{name}' must be a list of tag names ([] for none).")
            changes[name] = value
        elif kind == _AMOUNT:
            if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
                raise invalid(name, f"'{name}' must be a decimal string, a number or null.")
            try:
                amount = Decimal(value)
            except InvalidOperation:
                raise invalid(name, f"'{name}' must be a decimal number.") from None
            if not amount.is_finite() or amount < 0:
                raise invalid(name, f"'{name}' must be a non-negative number.")
            changes[name] = amount
        else:
            if not isinstance(value, str):
                raise invalid(name, f"'{name}' must be a string.")
            changes[name] = value
    return changes


@contextmanager
def _validation_as_422() -> Iterator[None]:
    try:
        yield
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise invalid(field, " ".join(messages)) from None


def _actor(request: ApiRequest) -> Actor:
    return Actor.of_key(ApiKey.objects.get(pk=request.api_key.key_id), request)


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _org_json(org: Organization) -> dict[str, Any]:
    return {
        "slug": org.slug,
        "name": org.name,
        "time_zone": org.time_zone,
        "strict": org.strict,
        "fail_mode": org.fail_mode,
        # Scheme and host only: a webhook's path is often its secret.
        "webhook_url": redacted_url(org.webhook_url),
        "max_request_usd": _amount(org.max_request_usd),
        "alerts_count_holds": org.alerts_count_holds,
        "unpriced_policy": org.unpriced_policy,
        "fallback_input_per_token": _amount(org.fallback_input_per_token),
        "fallback_output_per_token": _amount(org.fallback_output_per_token),
        "allowed_models": list(org.allowed_models),
        "report_tags": list(org.report_tags),
    }


# --- GET / PATCH /v1/teams/{slug} and /v1/keys/{lookup_id} ------------------------

_TEAM_FIELDS = {"name": _TEXT, "max_request_usd": _AMOUNT, "allowed_models": _MODELS}
_KEY_FIELDS = {"name": _TEXT, "max_request_usd": _AMOUNT, "allowed_models": _MODELS}
_LOOKUP_ID = re.compile(r"[0-9a-f]{12}")


@org_view
def team(request: ApiRequest, slug: str) -> HttpResponse:
    """A team's settings. Any key of the org reads them (a team-limited key
    its own team's); PATCH needs an admin key of the whole org, audited."""
    key: ApiKeyInfo = request.api_key
    if key.team_slug is not None and key.team_slug != slug:
        raise ApiError(403, "forbidden", "A team-limited key may read only its own team.")
    found = Team.objects.filter(org_id=key.org_id, slug=slug).first()
    if found is None:
        raise ApiError(404, "not_found", f"This organization has no team '{slug}'.", field="team")
    if request.method == "PATCH":
        _needs_org_admin(key, "Changing a team")
        changes = _changes(json_object(request.body), _TEAM_FIELDS)
        with _validation_as_422():
            found = team_update(team_id=found.pk, changes=changes, actor=_actor(request))
    return _no_store({"team": _team_json(found)})


@org_view
def api_key(request: ApiRequest, lookup_id: str) -> HttpResponse:
    """An API key's settings, by its lookup id (never its secret). Admin keys
    of the whole org read and change them (PATCH audited)."""
    key: ApiKeyInfo = request.api_key
    _needs_org_admin(key, "Reading or changing a key")
    if not _LOOKUP_ID.fullmatch(lookup_id):
        raise invalid("key", "A key's id is the 12 hex digits after 'tg_'.")
    found = (
        ApiKey.objects.select_related("team").filter(org_id=key.org_id, lookup_id=lookup_id).first()
    )
    if found is None:
        raise ApiError(404, "not_found", "This organization has no such key.", field="key")
    if request.method == "PATCH":
        changes = _changes(json_object(request.body), _KEY_FIELDS)
        with _validation_as_422():
            found = api_key_update(key_id=found.pk, changes=changes, actor=_actor(request))
    return _no_store({"key": _key_json(found)})


def _needs_org_admin(key: ApiKeyInfo, what: str) -> None:
    if not key.is_admin or key.team_slug is not None:
        raise ApiError(403, "forbidden", f"{what} needs an admin key of the whole org.")


def _no_store(body: dict[str, Any]) -> HttpResponse:
    response = JsonResponse(body)
    response["Cache-Control"] = "no-store"
    return response


def _team_json(team: Team) -> dict[str, Any]:
    return {
        "slug": team.slug,
        "name": team.name,
        "max_request_usd": _amount(team.max_request_usd),
        "allowed_models": list(team.allowed_models),
    }


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "lookup_id": key.lookup_id,
        "name": key.name,
        "team": key.team.slug if key.team_id else None,
        "is_admin": key.is_admin,
        "revoked": key.revoked_at is not None,
        "max_request_usd": _amount(key.max_request_usd),
        "allowed_models": list(key.allowed_models),
    }
