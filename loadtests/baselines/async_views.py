"""Design (c) of compare.py: the reservation as an async Django view on the async ORM.

This is how the endpoint would look written "async all the way" with Django
5.2: an `async def` view that only uses the async ORM (`afirst`,
`aget_or_create`, `aupdate`, `acreate`, `async for`), served by uvicorn with
Django's own psycopg connection pool (loadtests.baselines.async_settings). It
validates input with the hot path's `budgets.inputs`, caches verified keys
per process, and makes the same decision as the sync view
(loadtests/baselines/sync_views.py): every applicable budget's current window must
take the amount within its limit, or nothing is held and the answer is 402.

Why conditional updates instead of the sync view's locks: `select_for_update()`
needs `transaction.atomic()`, which Django 5.2 has only for sync code. The
two honest options were (1) wrap the sync decision in `sync_to_async`, which
is the sync design again behind an async signature, or (2) hold each window
with one conditional UPDATE in autocommit,
`UPDATE ... SET reserved = reserved + amount WHERE id = w AND spent <= limit - amount - reserved`,
and read the row count. (2) is the async-ORM design, and it is correct
where it matters: PostgreSQL re-checks the WHERE clause on the newest row
version under the row lock, so concurrent holds never push a window past its
limit. What it gives up against the sync view's transaction:
- Several windows (org + team + user budgets) are held one statement at a
  time, in id order; when a later one refuses, the earlier ones are given back
  with a compensating UPDATE. Meanwhile a concurrent request may see them
  held and be refused although the first one ends up not holding.
- The holds and the Reservation row are separate commits: when the insert
  fails, the holds are given back, but a process killed in between leaves a
  hold without a reservation (which no expiry sweep releases). The sync view
  and the hot path (one SQL function call) cannot leave that. (A client that
  disconnects does not cause it: see _finish_even_if_cancelled.)
- The budget figures in the answer are those read before the hold plus this
  hold's amount (the UPDATE returns no row through the ORM, and reading them
  again would cost one more round trip), so they may miss concurrent holds.

Under the hood each async ORM call is `sync_to_async(thread_sensitive=True)`:
Django 5.2 runs the query in the request's own thread on a sync connection.
That thread hop per query is part of what this design costs.

Served only through loadtests.baselines.async_settings; never part of config.urls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
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
from loadtests.baselines.sync_views import (
    BaselineKey,
    _budget_exceeded,
    _budget_json,
    _json,
    _money,
    _over_soft_limit,
    _timestamp,
    _warning,
    period_bounds,
)

# sha256(full key) -> (info, monotonic expiry); the same policy as budgets.auth.
_key_cache: dict[str, tuple[BaselineKey, float]] = {}


@csrf_exempt
@require_POST
async def reserve(request: HttpRequest) -> JsonResponse:
    try:
        key = await _authenticate(request.headers.get("Authorization", ""))
        d = inputs.decision(_json(request.body), key=key, require_amount=True)
        if d.amount is None:
            raise invalid("estimated_cost_usd", "The baseline needs 'estimated_cost_usd'.")
        return JsonResponse(await _finish_even_if_cancelled(_hold(key, d, d.amount)), status=201)
    except ApiError as exc:
        return JsonResponse(exc.body(), status=exc.status)


async def _finish_even_if_cancelled(coroutine: Coroutine[Any, Any, JsonBody]) -> JsonBody:
    """Run the hold to its end even when the client goes away.

    Django cancels an async view when the client disconnects. A cancelled
    `await` on the async ORM loses the result of a query that the worker
    thread still runs to the end, so a hold cancelled between its UPDATE and
    its INSERT would stay in the window with no reservation (seen in the
    benchmark when wrk closes its connections). The hold runs in a task of its
    own instead, which the view waits for before passing the cancellation on,
    so the request's thread and connection outlive it. The sync view's
    transaction likewise commits whether or not the client is still there.
    """
    task = asyncio.ensure_future(coroutine)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.gather(task, return_exceptions=True)
        raise


async def _authenticate(header: str) -> BaselineKey:
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
    key = await (
        ApiKey.objects.select_related("org", "team")
        .filter(lookup_id=lookup_id, revoked_at__isnull=True)
        .afirst()
    )
    if key is None or not key.matches(token):
        raise ApiError(401, "unauthenticated", "Unknown API key.")
    await ApiKey.objects.filter(pk=key.pk).aupdate(last_used_at=timezone.now())
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


async def _hold(key: BaselineKey, d: inputs.Decision, amount: Decimal) -> JsonBody:
    """Hold `amount` on every applicable budget, or raise 402 and hold nothing."""
    now = timezone.now()
    team = await _team(key, d.team)
    user = await _end_user(key, d.user)
    budgets = await _applicable_budgets(key.org_id, team, user)
    windows = await _current_windows(budgets, key.time_zone, now)
    subjects = {"org": key.org_slug, "team": d.team, "user": d.user}
    held: list[int] = []
    try:
        for window in windows:  # id order, like every writer's locks
            if not await _hold_window(window, amount):
                refused = await BudgetWindow.objects.select_related("budget").aget(id=window.id)
                raise _budget_exceeded(refused, subjects[refused.budget.scope], amount)
            held.append(window.id)
        reservation = await Reservation.objects.acreate(
            org_id=key.org_id,
            team=team,
            user=user,
            amount=amount,
            window_ids=[w.id for w in windows],
            model=d.model or "",
            created_at=now,
            expires_at=now + timedelta(seconds=d.ttl_seconds),
        )
    except BaseException:
        # Give back what this request held; without a transaction nothing else will.
        if held:
            await BudgetWindow.objects.filter(id__in=held).aupdate(reserved=F("reserved") - amount)
        raise
    for window in windows:
        window.reserved += amount
    return {
        "reservation_id": str(reservation.id),
        "amount_usd": _money(amount),
        "expires_at": _timestamp(reservation.expires_at),
        "budgets": [_budget_json(w, subjects[w.budget.scope]) for w in windows],
        "warnings": [_warning(w, subjects[w.budget.scope]) for w in windows if _over_soft_limit(w)],
    }


async def _hold_window(window: BudgetWindow, amount: Decimal) -> bool:
    """Add `amount` to the window's `reserved` if its budget allows it.

    One UPDATE in autocommit: PostgreSQL evaluates the limit against the row
    it locks (re-reading it if a concurrent hold changed it first), so the
    check and the increment cannot be split by another request.
    """
    budget = window.budget
    windows = BudgetWindow.objects.filter(id=window.id)
    if budget.enforce:
        windows = windows.filter(spent__lte=budget.limit_usd - amount - F("reserved"))
    return await windows.aupdate(reserved=F("reserved") + amount) == 1


async def _team(key: ApiKeyInfo, slug: str | None) -> Team | None:
    if slug is None:
        return None
    if key.strict:
        team = await Team.objects.filter(org_id=key.org_id, slug=slug).afirst()
        if team is None:
            raise ApiError(404, "not_found", f"Unknown team '{slug}'.", field="team")
        return team
    return (await Team.objects.aget_or_create(org_id=key.org_id, slug=slug))[0]


async def _end_user(key: ApiKeyInfo, external_id: str | None) -> EndUser | None:
    if external_id is None:
        return None
    if key.strict:
        user = await EndUser.objects.filter(org_id=key.org_id, external_id=external_id).afirst()
        if user is None:
            raise ApiError(404, "not_found", f"Unknown user '{external_id}'.", field="user")
        return user
    return (await EndUser.objects.aget_or_create(org_id=key.org_id, external_id=external_id))[0]


async def _applicable_budgets(org_id: int, team: Team | None, user: EndUser | None) -> list[Budget]:
    applies = Q(scope=Budget.Scope.ORG)
    if team is not None:
        applies |= Q(scope=Budget.Scope.TEAM, team=team)
    if user is not None:
        applies |= Q(scope=Budget.Scope.USER, user=user)
    return [b async for b in Budget.objects.filter(applies, org_id=org_id)]


async def _current_windows(budgets: list[Budget], tz: str, now: datetime) -> list[BudgetWindow]:
    """The current window of every budget in id order (not locked: each hold
    is checked by its own conditional UPDATE); missing windows are created."""
    if not budgets:
        return []
    bounds = {b.id: period_bounds(b.period, tz, now) for b in budgets}
    current = Q()
    for budget_id, (start, _end) in bounds.items():
        current |= Q(budget_id=budget_id, period_start=start)
    query = BudgetWindow.objects.filter(current).select_related("budget").order_by("id")
    windows = [w async for w in query]
    if len(windows) < len(budgets):
        # First use of a period; a concurrent request may create the same rows.
        await BudgetWindow.objects.abulk_create(
            [
                BudgetWindow(budget=b, period_start=bounds[b.id][0], period_end=bounds[b.id][1])
                for b in budgets
            ],
            ignore_conflicts=True,
        )
        windows = [w async for w in query.all()]
    return windows
