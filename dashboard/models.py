"""Who may see which organization's dashboard."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Membership(models.Model):
    """A dashboard login's organization and role in it. A login that is not
    staff sees the dashboard of its one organization only; staff may switch
    between all and act as org admins on the dashboard (dashboard/access.py,
    `powers_for`)."""

    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer: reads the dashboard"
        TEAM_LEAD = "team_lead", "Team lead: also edits the budgets of their teams"
        ORG_ADMIN = "org_admin", "Org admin: budgets, API keys, webhook and members"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    org = models.ForeignKey(
        "budgets.Organization", on_delete=models.CASCADE, related_name="memberships"
    )
    # db_default too: a login added by an older process (or SQL) only reads.
    role = models.CharField(
        max_length=9, choices=Role.choices, default=Role.VIEWER, db_default=Role.VIEWER
    )
    # The teams a team lead leads: teams of `org` (checked by the admin form
    # and the members page); ignored for the other roles.
    teams = models.ManyToManyField("budgets.Team", blank=True, related_name="leads")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["org", "user"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=["viewer", "team_lead", "org_admin"]),
                name="membership_role_valid",
                violation_error_message="The role must be viewer, team lead or org admin.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.org.slug}"


class SignInAttempt(models.Model):
    """One sign-in attempt that has not succeeded (yet), for throttling
    (dashboard/signins.py). Kept in the database so that every server process
    counts the same attempts; rows older than the window are deleted as new
    attempts arrive."""

    # The client's network and the username tried (dashboard/signins.py).
    key = models.CharField(max_length=250)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["key", "at"], name="signin_attempt_key_at"),
            models.Index(fields=["at"], name="signin_attempt_at"),
        ]

    def __str__(self) -> str:
        return f"{self.key} at {self.at:%Y-%m-%d %H:%M:%S}"


class LastViewedOrg(models.Model):
    """The organization a staff login last opened on the dashboard, where the
    next visit without `?org=` lands (dashboard/access.py, landing_org)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="last_viewed_org",
    )
    org = models.ForeignKey("budgets.Organization", on_delete=models.CASCADE, related_name="+")
    viewed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.user} last viewed {self.org.slug}"
