"""Design (b) of compare.py: the reservation as a plain sync Django view.

This is how the endpoint would look without Tollgate's async hot path: the
sync ORM inside `transaction.atomic()`, the budget windows locked with
`select_for_update()` in id order, the enforced limits checked under the lock,
`reserved` incremented and a Reservation row created. It validates the body
with the hot path's own `budgets.inputs` and caches verified keys per process
like `budgets.auth`, so the comparison measures the serving and database
design, not a difference in features. It prices no token estimates (the
benchmark always sends `estimated_cost_usd`).

Served only through loadtests.baselines.sync_settings; never part of config.urls.
"""

from __future__ import annotations

import json
import time
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from budgets import inputs
from budgets.auth import ApiKeyInfo
from budgets.models import (
    ApiKey,
    Budget,
    BudgetWindow,
    EndUser,
    Reservation,
    Team,
    hash_key_secret,
    parse_key,
)
from config.hotpath.errors import ApiError, JsonBody, invalid

# The single window of a `total` budget, as in budgets/sql/functions.sql.
TOTAL_START = datetime(1970, 1, 1, tzinfo=UTC)
TOTAL_END = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class BaselineKey(ApiKeyInfo):
    """A key as these designs cache it: with its org's time zone, which they
    pass to their queries (Tollgate's SQL reads the org's row instead)."""

    time_zone: str = "UTC"


# sha256(full key) -> (info, monotonic expiry); the same policy as budgets.auth.
_key_cache: dict[str, tuple[BaselineKey, float]] = {}


@csrf_exempt
@require_POST
def reserve(request: HttpRequest) -> JsonResponse:
    try:
        key = _authenticate(request.headers.get("Authorization", ""))
        d = inputs.decision(_json(request.body), key=key, require_amount=True)
        if d.amount is None:
            raise invalid("estimated_cost_usd", "The baseline needs 'estimated_cost_usd'.")
        return JsonResponse(_hold(key, d, d.amount), status=201)
    except ApiError as exc:
        return JsonResponse(exc.body(), status=exc.status)


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body, parse_float=Decimal)
    except ValueError:
        raise ApiError(400, "malformed_json", "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "The body must be a JSON object.")
    return data


def _authenticate(header: str) -> BaselineKey:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    lookup_id = parse_key(token) if scheme.lower() == "bearer" else None
    if lookup_id is None:
        raise ApiError(401, "unauthenticated", "Unknown API key.")
    digest = hash_key_secret(token)
    now = time.monotonic()
    cached = _key_cache.get(digest)
    if cached is not None and cached[1] > now:
        return cached[0]
    key = (
        ApiKey.objects.select_related("org", "team")
        .filter(lookup_id=lookup_id, revoked_at__isnull=True)
        .first()
    )
    if key is None or not key.matches(token):
        raise ApiError(401, "unauthenticated", "Unknown API key.")
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    info = BaselineKey(
        org_id=key.org_id,
        org_slug=key.org.slug,
        time_zone=key.org.time_zone,
        strict=key.org.strict,
        team_slug=key.team.slug if key.team else None,
        key_id=key.pk,
        fail_mode=key.org.fail_mode,
        is_admin=key.is_admin,
        revoked=False,
    )
    _key_cache[digest] = (info, now + settings.API_KEY_CACHE_SECONDS)
    return info


def _hold(key: BaselineKey, d: inputs.Decision, amount: Decimal) -> JsonBody:
    """Hold `amount` on every applicable budget, or raise 402 and write nothing."""
    now = timezone.now()
    with transaction.atomic():
        team = _team(key, d.team)
        user = _end_user(key, d.user)
        budgets = _applicable_budgets(key.org_id, team, user)
        windows = _lock_windows(budgets, key.time_zone, now)
        subjects = {"org": key.org_slug, "team": d.team, "user": d.user}
        for window in windows:
            budget = window.budget
            if budget.enforce and window.spent + window.reserved + amount > budget.limit_usd:
                # Raising inside atomic() rolls back anything this request wrote.
                raise _budget_exceeded(window, subjects[budget.scope], amount)
        BudgetWindow.objects.filter(id__in=[w.id for w in windows]).update(
            reserved=F("reserved") + amount
        )
        reservation = Reservation.objects.create(
            org_id=key.org_id,
            team=team,
            user=user,
            amount=amount,
            window_ids=[w.id for w in windows],
            model=d.model or "",
            created_at=now,
            expires_at=now + timedelta(seconds=d.ttl_seconds),
        )
    # Described as they are after the hold, like the hot path does.
    for window in windows:
        window.reserved += amount
    return {
        "reservation_id": str(reservation.id),
        "amount_usd": _money(amount),
        "expires_at": _timestamp(reservation.expires_at),
        "budgets": [_budget_json(w, subjects[w.budget.scope]) for w in windows],
        "warnings": [_warning(w, subjects[w.budget.scope]) for w in windows if _over_soft_limit(w)],
    }


def _team(key: ApiKeyInfo, slug: str | None) -> Team | None:
    if slug is None:
        return None
    if key.strict:
        team = Team.objects.filter(org_id=key.org_id, slug=slug).first()
        if team is None:
            raise ApiError(404, "not_found", f"Unknown team '{slug}'.", field="team")
        return team
    return Team.objects.get_or_create(org_id=key.org_id, slug=slug)[0]


def _end_user(key: ApiKeyInfo, external_id: str | None) -> EndUser | None:
    if external_id is None:
        return None
    if key.strict:
        user = EndUser.objects.filter(org_id=key.org_id, external_id=external_id).first()
        if user is None:
            raise ApiError(404, "not_found", f"Unknown user '{external_id}'.", field="user")
        return user
    return EndUser.objects.get_or_create(org_id=key.org_id, external_id=external_id)[0]


def _applicable_budgets(org_id: int, team: Team | None, user: EndUser | None) -> list[Budget]:
    applies = Q(scope=Budget.Scope.ORG)
    if team is not None:
        applies |= Q(scope=Budget.Scope.TEAM, team=team)
    if user is not None:
        applies |= Q(scope=Budget.Scope.USER, user=user)
    return list(Budget.objects.filter(applies, org_id=org_id))


def _lock_windows(budgets: list[Budget], tz: str, now: datetime) -> list[BudgetWindow]:
    """The current window of every budget, locked in id order (the order every
    writer uses, so two holds never deadlock); missing windows are created."""
    if not budgets:
        return []
    bounds = {b.id: period_bounds(b.period, tz, now) for b in budgets}
    current = Q()
    for budget_id, (start, _end) in bounds.items():
        current |= Q(budget_id=budget_id, period_start=start)
    locked = (
        BudgetWindow.objects.filter(current)
        .select_related("budget")
        .select_for_update(of=("self",))
        .order_by("id")
    )
    windows = list(locked)
    if len(windows) < len(budgets):
        # First use of a period; a concurrent request may create the same rows.
        BudgetWindow.objects.bulk_create(
            [
                BudgetWindow(budget=b, period_start=bounds[b.id][0], period_end=bounds[b.id][1])
                for b in budgets
            ],
            ignore_conflicts=True,
        )
        windows = list(locked.all())
    return windows


def period_bounds(period: str, tz: str, at: datetime) -> tuple[datetime, datetime]:
    """Start and end of the period holding `at` in time zone `tz`; the same
    instants as tollgate_period_bounds() in budgets/sql/functions/10_subjects.sql."""
    if period == Budget.Period.TOTAL:
        return TOTAL_START, TOTAL_END
    zone = zoneinfo.ZoneInfo(tz)
    today = at.astimezone(zone).date()
    if period == Budget.Period.DAY:
        start, end = today, today + timedelta(days=1)
    elif period == Budget.Period.WEEK:
        start = today - timedelta(days=today.weekday())
        end = start + timedelta(days=7)
    else:
        start = today.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return _local_midnight(start, zone), _local_midnight(end, zone)


def _local_midnight(day: date, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant of `day`: fold 0 reads a repeated midnight as the
    earlier instant and a skipped one with the offset before the change (the
    instant the day begins). In UTC, because an aware datetime in a gap or a
    fold never equals one in another zone, not even the same instant."""
    return datetime.combine(day, dtime.min, tzinfo=zone).astimezone(UTC)


def _budget_exceeded(window: BudgetWindow, subject: str, amount: Decimal) -> ApiError:
    budget = window.budget
    return ApiError(
        402,
        "budget_exceeded",
        f"The {budget.scope} budget '{subject}' ({budget.period}) "
        f"cannot hold ${_money(amount)} more.",
        scope=budget.scope,
        id=subject,
        period=budget.period,
        limit_usd=_money(budget.limit_usd),
        spent_usd=_money(window.spent),
        reserved_usd=_money(window.reserved),
        resets_at=_resets_at(window),
    )


def _budget_json(window: BudgetWindow, subject: str) -> JsonBody:
    budget = window.budget
    used = window.spent + window.reserved
    return {
        "scope": budget.scope,
        "id": subject,
        "period": budget.period,
        "limit_usd": _money(budget.limit_usd),
        "spent_usd": _money(window.spent),
        "reserved_usd": _money(window.reserved),
        "remaining_usd": _money(max(budget.limit_usd - used, Decimal(0))),
        "used_pct": _used_pct(window),
        "soft_limit_pct": budget.soft_limit_pct,
        "resets_at": _resets_at(window),
        "enforce": budget.enforce,
    }


def _over_soft_limit(window: BudgetWindow) -> bool:
    budget = window.budget
    used = window.spent + window.reserved
    if budget.limit_usd == 0:
        return used > 0
    return used * 100 >= budget.soft_limit_pct * budget.limit_usd


def _warning(window: BudgetWindow, subject: str) -> JsonBody:
    budget = window.budget
    return {
        "scope": budget.scope,
        "id": subject,
        "period": budget.period,
        "used_pct": _used_pct(window),
        "enforce": budget.enforce,
    }


def _used_pct(window: BudgetWindow) -> str | None:
    limit = window.budget.limit_usd
    if limit <= 0:
        return None
    return str(round((window.spent + window.reserved) * 100 / limit, 1))


def _resets_at(window: BudgetWindow) -> str | None:
    if window.budget.period == Budget.Period.TOTAL:
        return None
    return window.period_end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timestamp(at: datetime) -> str:
    """Millisecond precision in UTC, as the hot path writes it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _money(amount: Decimal) -> str:
    return format(amount.normalize(), "f")
