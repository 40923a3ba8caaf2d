"""Budgets' periodic jobs, run by `manage.py run_worker` (config/jobs.py)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from budgets.services import (
    alerts_deliver_due,
    alerts_raise_projected,
    forecasts_refresh,
    reservations_expire,
    reservations_prune,
)


def expire_reservations() -> str:
    expired = reservations_expire(limit=1000)
    return f"{expired} expired" if expired else ""


def deliver_alerts() -> str:
    report = alerts_deliver_due()
    if not (report.delivered or report.retrying or report.failed):
        return ""
    return (
        f"{report.delivered} delivered, {report.retrying} will retry, "
        f"{report.failed} failed for good"
    )


def prune_reservations() -> str:
    days = settings.RESERVATION_RETENTION_DAYS
    if not days:
        return ""
    # A batch a round: a backlog (a first run on a large table) goes at
    # RESERVATION_PRUNE_BATCH a round without one long transaction.
    deleted = reservations_prune(older_than=timedelta(days=days))
    return f"{deleted} holds closed more than {days:g} days ago deleted" if deleted else ""


def forecast_budgets() -> str:
    # Profiles change once an hour (they end at the last complete hour), so
    # a round refreshes only the orgs whose profiles are older; judging the
    # forecasts against the limits is cheap and runs every round, because
    # the spend they start from moves all the time.
    refreshed = forecasts_refresh()
    raised = alerts_raise_projected()
    parts = [f"{refreshed} forecasts refreshed"] if refreshed else []
    if raised:
        parts.append(f"{raised} projected-to-exceed alerts")
    return ", ".join(parts)
