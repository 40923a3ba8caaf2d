"""Who may see which organization's dashboard."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Membership(models.Model):
    """A dashboard login's organization. A login that is not staff sees the
    dashboard of its one organization only; staff may switch between all."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    org = models.ForeignKey(
        "budgets.Organization", on_delete=models.CASCADE, related_name="memberships"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["org", "user"]

    def __str__(self) -> str:
        return f"{self.user} in {self.org.slug}"
