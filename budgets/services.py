"""Writes that span several models (sync ORM: admin, commands, tests)."""

from __future__ import annotations

import json
import random
import time
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from budgets import webhooks
from budgets.audit import (
    SYSTEM,
    Actor,
    api_key_values,
    audit_record,
    budget_address,
    budget_values,
    organization_values,
    redacted_url,
    team_values,
)
from budgets.models import (
    Alert,
    AlertDeliveryAttempt,
    ApiKey,
    Budget,
    Organization,
    Reservation,
    Team,
)
from config.hotpath import db
from config.hotpath.inputs import usd_for_people


@transaction.atomic
def organization_create(
    *,
    slug: str,
    time_zone: str = "UTC",
    strict: bool = False,
    name: str = "",
    alerts_count_holds: bool = False,
    actor: Actor = SYSTEM,
) -> Organization:
    org = Organization(
        slug=slug,
        time_zone=time_zone,
        strict=strict,
        name=name or slug,
        alerts_count_holds=alerts_count_holds,
    )
    org.full_clean()
    org.save()
    audit_record(
        actor=actor,
        org=org,
        object_type="organization",
        object_id=org.slug,
        action="create",
        new=organization_values(org),
    )
    return org


@transaction.atomic
def organization_update(*, org_id: int, changes: dict[str, Any], actor: Actor) -> Organization:
    """Change an organization's settings (the API's PATCH /v1/org): validated
    as a whole (ValidationError naming the fields, nothing written), a new
    time zone carrying the current windows (organization_time_zone_change),
    audited in the same transaction. A change that changes nothing records
    nothing."""
    org = Organization.objects.select_for_update().get(pk=org_id)
    old = organization_values(org)
    for name, value in changes.items():
        setattr(org, name, value)
    org.full_clean()
    if org.time_zone != old["time_zone"]:
        organization_time_zone_change(org_id=org.pk, time_zone=org.time_zone)
    org.save()
    if org.alerts_count_holds != old["alerts_count_holds"]:
        alerts_judge(org_id=org.pk)
    new = organization_values(org)
    if new != old:
        audit_record(
            actor=actor,
            org=org,
            object_type="organization",
            object_id=org.slug,
            action="update",
            old=old,
            new=new,
        )
    return org


def organization_time_zone_change(*, org_id: int, time_zone: str) -> list[dict[str, Any]]:
    """Move an org to another time zone, carrying each budget's current
    window (spend, holds, alerts) into the new zone's period, so that no
    budget opens empty; every process enforces the new zone from its next
    statement (tollgate_change_time_zone). The caller saves the org in the
    same transaction and records the change. Returns the windows moved."""
    with connection.cursor() as cursor:
        cursor.execute(db.QUERIES["change_time_zone"], {"org_id": org_id, "tz": time_zone})
        moved = cursor.fetchone()[0]
    return json.loads(moved) if isinstance(moved, str) else moved


@transaction.atomic
def api_key_create(
    *,
    org: Organization,
    team_slug: str | None = None,
    is_admin: bool = False,
    name: str = "",
    actor: Actor = SYSTEM,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is not stored and is
    shown to the caller once. A team that does not exist yet is created."""
    team = None
    if team_slug:
        team, _ = Team.objects.get_or_create(org=org, slug=team_slug)
    key, secret = ApiKey.generate(org=org, team=team, is_admin=is_admin, name=name)
    key.save()
    audit_record(
        actor=actor,
        org=org,
        object_type="api_key",
        object_id=str(key.pk),
        action="create",
        new=api_key_values(key),
    )
    return key, secret


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: Actor) -> bool:
    """Revoke a key (it stops working within API_KEY_CACHE_SECONDS); False if
    it was already revoked. The row is locked so that two revocations record
    one change."""
    key = (
        ApiKey.objects.select_for_update(of=("self",)).select_related("org", "team").get(pk=key.pk)
    )
    if key.revoked_at is not None:
        return False
    old = api_key_values(key)
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor,
        org=key.org,
        object_type="api_key",
        object_id=str(key.pk),
        action="revoke",
        old=old,
        new=api_key_values(key),
    )
    return True


@transaction.atomic
def team_update(*, team_id: int, changes: dict[str, Any], actor: Actor) -> Team:
    """Change a team's settings (PATCH /v1/teams/{slug}): validated as a
    whole (ValidationError naming the field, nothing written), audited in the
    same transaction; a change that changes nothing records nothing."""
    team = Team.objects.select_for_update(of=("self",)).select_related("org").get(pk=team_id)
    _settings_update(team, changes, team_values, "team", team.slug, actor)
    return team


@transaction.atomic
def api_key_update(*, key_id: int, changes: dict[str, Any], actor: Actor) -> ApiKey:
    """Change a key's settings (PATCH /v1/keys/{lookup_id}), as team_update."""
    key = (
        ApiKey.objects.select_for_update(of=("self",)).select_related("org", "team").get(pk=key_id)
    )
    _settings_update(key, changes, api_key_values, "api_key", str(key.pk), actor)
    return key


def _settings_update(obj, changes, values, object_type: str, object_id: str, actor: Actor) -> None:
    old = values(obj)
    for name, value in changes.items():
        setattr(obj, name, value)
    obj.full_clean()
    obj.save()
    new = values(obj)
    if new != old:
        audit_record(
            actor=actor,
            org=obj.org,
            object_type=object_type,
            object_id=object_id,
            action="update",
            old=old,
            new=new,
        )


# --- Alert delivery (the outbox of budgets.Alert) ------------------------------------

ALERT_MAX_ATTEMPTS = 8
ALERT_LEASE = timedelta(minutes=2)


@dataclass
class AlertDeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


def time_for_people(at: datetime, time_zone: str) -> str:
    """A moment as people of the org read it: "2026-12-05 10:41 PST"."""
    return f"{at.astimezone(zoneinfo.ZoneInfo(time_zone)):%Y-%m-%d %H:%M %Z}"


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The webhook body: structured fields (exact amounts) plus a
    Slack-compatible `text` (money and time as people read them)."""
    if alert.kind == Alert.Kind.UNPRICED_MODEL:
        return _unpriced_model_payload(alert)
    if alert.kind == Alert.Kind.PROJECTED:
        return _projected_payload(alert)
    used_pct = alert.used_usd * 100 / alert.limit_usd if alert.limit_usd else Decimal(0)
    what = "soft limit" if alert.kind == Alert.Kind.SOFT else "hard limit"
    text = (
        f"Tollgate: {_budget_for_people(alert)} reached its {what}: "
        f"{usd_for_people(alert.used_usd)} of "
        f"{usd_for_people(alert.limit_usd)} ({used_pct:.1f}%) at "
        f"{time_for_people(alert.created_at, alert.org.time_zone)}."
    )
    return {"text": text, "alert": _budget_alert_fields(alert, used_pct=f"{used_pct:.1f}")}


def _budget_for_people(alert: Alert) -> str:
    budget = alert.budget
    of_models = f" for models {budget.model_filter}" if budget.model_filter else ""
    return (
        f"{budget.scope} budget '{budget.subject_id}'{of_models} ({budget.period}) of "
        f"{alert.org.slug}"
    )


def _budget_alert_fields(alert: Alert, **extra: Any) -> dict[str, Any]:
    """The structured fields of a budget's alert, the kind's own in `extra`."""
    budget, window = alert.budget, alert.window
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "org": alert.org.slug,
        "scope": budget.scope,
        "subject": budget.subject_id,
        "model": budget.model_filter or None,
        "period": budget.period,
        "limit_usd": f"{alert.limit_usd.normalize():f}",
        "used_usd": f"{alert.used_usd.normalize():f}",
        **extra,
        "soft_limit_pct": budget.soft_limit_pct,
        "window_start": window.period_start.isoformat(),
        "resets_at": None if budget.period == "total" else window.period_end.isoformat(),
        "created_at": alert.created_at.isoformat(),
    }


def _projected_payload(alert: Alert) -> dict[str, Any]:
    budget, window, tz = alert.budget, alert.window, alert.org.time_zone
    runs_out = time_for_people(alert.runs_out_at, tz)
    if budget.period == "total":
        what = f"is projected to run out of its limit of {usd_for_people(alert.limit_usd)}"
        forecast = f"at the usual rate at {runs_out}"
    else:
        what = (
            f"is projected to exceed its limit of {usd_for_people(alert.limit_usd)} in the "
            f"window {time_for_people(window.period_start, tz)} to "
            f"{time_for_people(window.period_end, tz)}"
        )
        forecast = (
            f"{usd_for_people(alert.projected_usd)} by its end at the usual rate, "
            f"running out at {runs_out}"
        )
    text = (
        f"Tollgate: {_budget_for_people(alert)} {what}: {forecast} "
        f"({usd_for_people(alert.used_usd)} spent and held at "
        f"{time_for_people(alert.created_at, tz)})."
    )
    projected = alert.projected_usd
    return {
        "text": text,
        "alert": _budget_alert_fields(
            alert,
            projected_usd=None if projected is None else f"{projected.normalize():f}",
            runs_out_at=alert.runs_out_at.isoformat(),
        ),
    }


def _unpriced_model_payload(alert: Alert) -> dict[str, Any]:
    free = " and counts against no budget until repriced" if not alert.used_usd else ""
    text = (
        f"Tollgate: {alert.org.slug} sent model '{alert.model}', which has no price, at "
        f"{time_for_people(alert.created_at, alert.org.time_zone)}; its first use was charged "
        f"{usd_for_people(alert.used_usd)}{free}. Add its price or an alias, then reprice."
    )
    return {
        "text": text,
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "org": alert.org.slug,
            "model": alert.model,
            "used_usd": f"{alert.used_usd.normalize():f}",
            "created_at": alert.created_at.isoformat(),
        },
    }


def _claim_due_alerts(limit: int) -> list[Alert]:
    """Take a lease on due alerts (short transaction, SKIP LOCKED), so that
    several delivery processes never send the same alert at once and no
    transaction stays open during an HTTP call."""
    now = timezone.now()
    with transaction.atomic():
        alerts = list(
            Alert.objects.select_for_update(skip_locked=True)
            .filter(delivery_status=Alert.Delivery.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at")[:limit]
        )
        Alert.objects.filter(pk__in=[a.pk for a in alerts]).update(
            next_attempt_at=now + ALERT_LEASE
        )
    return list(
        Alert.objects.filter(pk__in=[a.pk for a in alerts])
        .select_related("org", "budget__org", "budget__team", "budget__user", "window")
        .order_by("created_at")
    )


def _post_json(url: str, body: dict[str, Any]) -> tuple[int | None, str]:
    """One POST to a webhook (budgets/webhooks.py checks where it goes): the
    status code, or None, and what went wrong in words ("" when delivered)."""
    try:
        status_code = webhooks.post_json(url, json.dumps(body).encode())
    except webhooks.TargetRefused as exc:
        return None, str(exc)
    except OSError as exc:
        return None, str(exc) or type(exc).__name__
    if 200 <= status_code < 300:
        return status_code, ""
    if 300 <= status_code < 400:
        return status_code, f"HTTP {status_code} (redirects are not followed)"
    return status_code, f"HTTP {status_code}"


def _backoff(attempts: int) -> timedelta:
    """10 s, 20 s, 40 s, ... up to an hour, with jitter so retries spread out."""
    base = min(10 * 2 ** (attempts - 1), 3600)
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def alert_deliver(alert: Alert) -> bool:
    """One attempt; records it and schedules a retry or gives up. True if delivered."""
    started = time.monotonic()
    status_code, error = _post_json(alert.org.webhook_url, alert_payload(alert))
    ok = status_code is not None and 200 <= status_code < 300
    now = timezone.now()
    with transaction.atomic():
        AlertDeliveryAttempt.objects.create(
            alert=alert,
            attempted_at=now,
            status_code=status_code,
            error=error[:1000],
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        alert.attempts += 1
        if ok:
            alert.delivery_status, alert.delivered_at, alert.last_error = (
                Alert.Delivery.DELIVERED,
                now,
                "",
            )
        elif alert.attempts >= ALERT_MAX_ATTEMPTS:
            alert.delivery_status, alert.last_error = Alert.Delivery.FAILED, error
        else:
            alert.next_attempt_at, alert.last_error = now + _backoff(alert.attempts), error
        alert.save(
            update_fields=[
                "attempts",
                "delivery_status",
                "delivered_at",
                "last_error",
                "next_attempt_at",
            ]
        )
    return ok


@dataclass
class WebhookTestResult:
    at: datetime
    status_code: int | None
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def webhook_test(*, org: Organization, actor: Actor) -> WebhookTestResult:
    """POST a test alert to the org's webhook, as a real alert is delivered,
    and record the answer in the audit log (action "test_webhook"). The HTTP
    call happens outside any transaction; the record is written after it."""
    now = timezone.now()
    body = {
        "text": (
            f"Tollgate: test alert for {org.slug}, sent at "
            f"{time_for_people(now, org.time_zone)}. Budget alerts will arrive here."
        ),
        "test": True,
        "alert": None,
    }
    started = time.monotonic()
    status_code: int | None = None
    error = ""
    if not org.webhook_url:
        error = "No webhook URL"
    else:
        status_code, error = _post_json(org.webhook_url, body)
    result = WebhookTestResult(
        at=now,
        status_code=status_code,
        error=error[:1000],
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    with transaction.atomic():
        audit_record(
            actor=actor,
            org=org,
            object_type="organization",
            object_id=org.slug,
            action="test_webhook",
            new={
                "webhook_url": redacted_url(org.webhook_url),
                "status_code": result.status_code,
                "error": result.error,
                "duration_ms": result.duration_ms,
            },
        )
    return result


def alerts_judge(*, org_id: int, budget_id: int | None = None) -> None:
    """Judge the current windows of an org (or of one budget) against their
    thresholds again, after a change to what they are judged on: a raised
    limit or a reset re-arms a threshold, a lowered one may cross it."""
    with connection.cursor() as cursor:
        cursor.execute(db.QUERIES["judge_alerts"], {"org_id": org_id, "budget_id": budget_id})


def forecasts_refresh(*, at: datetime | None = None) -> int:
    """Recompute the forecast profile of every org with a budget whose profile
    is missing or older than the current hour (tollgate_forecast_refresh),
    one org a transaction. Returns how many budgets got a new profile."""
    at = at or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(db.QUERIES["stale_forecast_orgs"], {"at": at})
        org_ids = [row[0] for row in cursor.fetchall()]
    refreshed = 0
    for org_id in org_ids:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(db.QUERIES["refresh_forecasts"], {"org_id": org_id, "at": at})
            refreshed += cursor.fetchone()[0]
    return refreshed


def alerts_raise_projected(*, at: datetime | None = None) -> int:
    """Raise the "projected to exceed" alerts the forecasts call for, once
    per window (tollgate_raise_projected_alerts). Returns how many."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(db.QUERIES["raise_projected_alerts"], {"at": at or timezone.now()})
        return cursor.fetchone()[0]


def alerts_deliver_due(*, limit: int = 50) -> AlertDeliveryReport:
    report = AlertDeliveryReport()
    for alert in _claim_due_alerts(limit):
        if alert_deliver(alert):
            report.delivered += 1
        elif alert.delivery_status == Alert.Delivery.FAILED:
            report.failed += 1
        else:
            report.retrying += 1
    return report


# --- Holds --------------------------------------------------------------------------
# The same named queries as the hot path (budgets/sql/queries.sql), through
# Django's connection: one text of each call.


@transaction.atomic
def budget_create(budget: Budget, *, actor: Actor) -> Budget:
    """Save a new budget (validated), give it its current window with the
    period's spend so far, and record it, in one transaction."""
    budget.full_clean()
    budget.save()
    budget_seed_window(budget)
    # The seeded spend may already be over a threshold.
    alerts_judge(org_id=budget.org_id, budget_id=budget.pk)
    audit_record(
        actor=actor,
        org=budget.org,
        object_type="budget",
        object_id=budget_address(budget),
        action="create",
        new=budget_values(budget),
    )
    return budget


@transaction.atomic
def budget_update(budget: Budget, *, actor: Actor, moved: bool = False) -> Budget:
    """Save a changed budget (validated) and record its values before and
    after, in one transaction: the row is locked first, so that two changes
    record what each overwrote. A budget `moved` to another subject or period
    starts with that scope's spend and holds in the current window; its
    thresholds are judged again (a raised limit re-arms them, a lowered one
    may cross)."""
    before = (
        Budget.objects.select_for_update(of=("self",))
        .select_related("org", "team", "user", "key")
        .get(pk=budget.pk)
    )
    old = budget_values(before)
    budget.full_clean()
    budget.save()
    if moved:
        budget_seed_window(budget)
    alerts_judge(org_id=budget.org_id, budget_id=budget.pk)
    audit_record(
        actor=actor,
        org=budget.org,
        object_type="budget",
        object_id=budget_address(budget),
        action="update",
        old=old,
        new=budget_values(budget),
    )
    return budget


@transaction.atomic
def budget_delete(budget: Budget, *, actor: Actor) -> bool:
    """Delete a budget with its windows and alerts, and record it; False if it
    was gone already (nothing recorded)."""
    locked = (
        Budget.objects.select_for_update(of=("self",))
        .select_related("org", "team", "user", "key")
        .filter(pk=budget.pk)
        .first()
    )
    if locked is None:
        return False
    audit_record(
        actor=actor,
        org=locked.org,
        object_type="budget",
        object_id=budget_address(locked),
        action="delete",
        old=budget_values(locked),
    )
    locked.delete()
    return True


def budget_seed_window(budget: Budget) -> None:
    """Give a budget created mid-period (or moved to another period) the spend
    and open holds its scope already has in the current window; a budget
    whose current window exists keeps it."""
    with connection.cursor() as cursor:
        cursor.execute(db.QUERIES["seed_window"], {"budget_id": budget.pk})


def reservation_release(reservation: Reservation) -> None:
    """Release one hold; releasing a hold that is no longer active does nothing."""
    with connection.cursor() as cursor:
        cursor.execute(
            db.QUERIES["release"],
            {"org_id": reservation.org_id, "reservation_id": reservation.pk, "retention": None},
        )


def reservations_expire(*, limit: int) -> int:
    """Expire up to `limit` holds whose time is up; returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(db.QUERIES["expire_reservations"], {"limit": limit})
        return cursor.fetchone()[0]


# --- Closed holds -------------------------------------------------------------------
RESERVATION_PRUNE_BATCH = 5000


def reservations_prune(*, older_than: timedelta, limit: int = RESERVATION_PRUNE_BATCH) -> int:
    """Delete up to `limit` holds that closed (settled, released, expired) more
    than `older_than` ago, oldest first (index reservation_closed); returns how
    many. Active holds stay, however old. A release of a deleted hold answers
    200 "closed" (tollgate_release), and an event naming it settles nothing."""
    oldest = reservations_closed_before(timezone.now() - older_than).values("id")[:limit]
    deleted, _ = Reservation.objects.filter(id__in=oldest).delete()
    return deleted


def reservations_closed_before(cutoff: datetime) -> QuerySet[Reservation]:
    """Holds closed before `cutoff`, oldest first. The status condition is the
    partial index's (reservation_closed): without it the index cannot serve."""
    return (
        Reservation.objects.filter(closed_at__lt=cutoff)
        .exclude(status=Reservation.Status.ACTIVE)
        .order_by("closed_at")
    )
