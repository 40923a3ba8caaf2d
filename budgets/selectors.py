"""Reads for reports (sync ORM): the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from budgets.models import AuditEntry


@dataclass(frozen=True)
class AuditQuery:
    org_id: int
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    object_type: str | None = None
    object_id: str | None = None
    action: str | None = None
    before_id: int | None = None  # the cursor: entries older than this one
    limit: int = 100


def audit_entries(query: AuditQuery) -> list[AuditEntry]:
    """An org's entries, newest first, at most `limit` + 1 (the extra one
    tells the caller there is a next page). Keyset on id, through the indexes
    audit_org_newest and audit_org_object, so a page costs the same however
    deep it is."""
    entries: QuerySet[AuditEntry] = AuditEntry.objects.filter(org_id=query.org_id)
    if query.start is not None:
        entries = entries.filter(at__gte=query.start)
    if query.end is not None:
        entries = entries.filter(at__lt=query.end)
    if query.object_type is not None:
        entries = entries.filter(object_type=query.object_type)
    if query.object_id is not None:
        entries = entries.filter(object_id=query.object_id)
    if query.action is not None:
        entries = entries.filter(action=query.action)
    if query.before_id is not None:
        entries = entries.filter(id__lt=query.before_id)
    return list(entries.order_by("-id")[: query.limit + 1])
