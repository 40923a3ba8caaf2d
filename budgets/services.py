"""Writes that span several models (sync ORM: admin, commands, tests)."""

from __future__ import annotations

from django.db import transaction

from budgets.models import ApiKey, Organization, Team


def organization_create(
    *, slug: str, time_zone: str = "UTC", strict: bool = False, name: str = ""
) -> Organization:
    org = Organization(slug=slug, time_zone=time_zone, strict=strict, name=name or slug)
    org.full_clean()
    org.save()
    return org


@transaction.atomic
def api_key_create(
    *, org: Organization, team_slug: str | None = None, is_admin: bool = False, name: str = ""
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is not stored and is
    shown to the caller once. A team that does not exist yet is created."""
    team = None
    if team_slug:
        team, _ = Team.objects.get_or_create(org=org, slug=team_slug)
    key, secret = ApiKey.generate(org=org, team=team, is_admin=is_admin, name=name)
    key.save()
    return key, secret
