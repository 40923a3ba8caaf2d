"""Changes to who may do what in an organization (Membership), recorded in
the audit log like the changes to budgets and keys (budgets/audit.py)."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from budgets.audit import Actor, audit_record
from budgets.models import Organization, Team
from dashboard.models import Membership


def membership_values(membership: Membership) -> dict:
    return {
        "user": membership.user.get_username(),
        "role": membership.role,
        "teams": sorted(membership.teams.values_list("slug", flat=True)),
    }


@transaction.atomic
def membership_add(*, org: Organization, username: str, role: str, actor: Actor) -> Membership:
    """Add an existing login to `org` (a login belongs to one organization).
    Raises ValidationError in words, naming the field."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ValidationError(
            {"username": f"No login '{username}'. Staff create logins in Django admin."}
        )
    existing = Membership.objects.filter(user=user).select_related("org").first()
    if existing is not None:
        where = "this organization" if existing.org_id == org.pk else "another organization"
        raise ValidationError({"username": f"'{username}' already belongs to {where}."})
    membership = Membership(user=user, org=org, role=role)
    membership.full_clean()
    membership.save()
    audit_record(
        actor=actor,
        org=org,
        object_type="membership",
        object_id=username,
        action="create",
        new=membership_values(membership),
    )
    return membership


@transaction.atomic
def membership_update(
    *, membership: Membership, role: str, teams: Iterable[Team], actor: Actor
) -> Membership:
    """Change a member's role (and a team lead's teams: teams of the org; the
    other roles lead none). Recorded with the values before and after."""
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("user", "org")
        .get(pk=membership.pk)
    )
    teams = list(teams)
    if any(team.org_id != membership.org_id for team in teams):
        raise ValidationError({"teams": "A team lead leads teams of their own organization."})
    if role != Membership.Role.TEAM_LEAD:
        teams = []
    old = membership_values(membership)
    membership.role = role
    membership.full_clean()
    membership.save(update_fields=["role"])
    membership.teams.set(teams)
    audit_record(
        actor=actor,
        org=membership.org,
        object_type="membership",
        object_id=membership.user.get_username(),
        action="update",
        old=old,
        new=membership_values(membership),
    )
    return membership
