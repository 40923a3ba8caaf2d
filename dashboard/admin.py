from __future__ import annotations

from django.contrib import admin

from dashboard.models import Membership


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "org", "created_at"]
    list_filter = ["org"]
    search_fields = ["user__username", "org__slug"]
    autocomplete_fields = ["user"]
