from __future__ import annotations

from django import forms
from django.contrib import admin

from dashboard.models import Membership


class MembershipForm(forms.ModelForm):
    """A team lead's teams must be teams of the membership's org, and only a
    team lead leads teams."""

    class Meta:
        model = Membership
        fields = ["user", "org", "role", "teams", "created_at"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        teams = self.fields.get("teams")
        if teams is not None:
            teams.queryset = teams.queryset.select_related("org").order_by("org__slug", "slug")

    def clean(self):
        cleaned = super().clean()
        org, role, teams = cleaned.get("org"), cleaned.get("role"), cleaned.get("teams")
        if teams and role != Membership.Role.TEAM_LEAD:
            self.add_error(
                "teams", "Only a team lead leads teams: clear them, or make this login a team lead."
            )
        elif teams and org is not None:
            others = [str(t) for t in teams if t.org_id != org.pk]
            if others:
                self.add_error("teams", f"Not teams of {org.slug}: {', '.join(others)}.")
        return cleaned


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    form = MembershipForm
    list_display = ["user", "org", "role", "created_at"]
    list_filter = ["role", "org"]
    search_fields = ["user__username", "org__slug"]
    autocomplete_fields = ["user"]
    filter_horizontal = ["teams"]
