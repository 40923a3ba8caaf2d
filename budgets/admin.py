from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from budgets.models import (
    Alert,
    AlertDeliveryAttempt,
    ApiKey,
    Budget,
    BudgetWindow,
    EndUser,
    Organization,
    Reservation,
    Team,
)
from budgets.services import budget_seed_window, reservation_release, reservations_expire
from config.paginators import LargeTablePaginator


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "time_zone", "strict", "fail_mode", "created_at"]
    search_fields = ["slug", "name"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "org", "name", "created_at"]
    list_filter = ["org"]
    search_fields = ["slug", "name"]


@admin.register(EndUser)
class EndUserAdmin(admin.ModelAdmin):
    list_display = ["external_id", "org", "created_at"]
    list_filter = ["org"]
    search_fields = ["external_id"]


class BudgetWindowInline(admin.TabularInline):
    model = BudgetWindow
    extra = 0
    fields = ["period_start", "period_end", "spent", "reserved"]
    readonly_fields = fields
    can_delete = False
    max_num = 0
    ordering = ["-period_start"]


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "org",
        "scope",
        "period",
        "enforce",
        "spent",
        "reserved",
        "limit_usd",
        "used_pct",
        "resets_at",
    ]
    list_filter = ["scope", "period", "enforce", "org"]
    search_fields = ["org__slug", "team__slug", "user__external_id"]
    autocomplete_fields = ["team", "user"]
    inlines = [BudgetWindowInline]
    actions = ["reset_current_window"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Budget]:
        return super().get_queryset(request).select_related("org", "team", "user")

    def save_model(self, request: HttpRequest, obj: Budget, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        # A new budget, or one moved to another period or subject, starts with
        # the spend and holds its scope already has in the current window.
        if not change or {"scope", "team", "user", "period"} & set(form.changed_data):
            budget_seed_window(obj)

    @admin.display(description="spent")
    def spent(self, budget: Budget) -> str:
        window = budget.current_window()
        return f"{window.spent.normalize():f}" if window else "0"

    @admin.display(description="reserved")
    def reserved(self, budget: Budget) -> str:
        window = budget.current_window()
        return f"{window.reserved.normalize():f}" if window else "0"

    @admin.display(description="used %")
    def used_pct(self, budget: Budget) -> str:
        window = budget.current_window()
        if window is None or not budget.limit_usd:
            return "-"
        return f"{(window.spent + window.reserved) * 100 / budget.limit_usd:.1f}"

    @admin.display(description="resets at")
    def resets_at(self, budget: Budget) -> str:
        window = budget.current_window()
        if budget.period == Budget.Period.TOTAL:
            return "never"
        return f"{window.period_end:%Y-%m-%d %H:%M %Z}" if window else "-"

    @admin.action(description="Reset the current window's spend (audited in the admin log)")
    def reset_current_window(self, request: HttpRequest, queryset: QuerySet[Budget]) -> None:
        """Sets the current window's `spent` to 0; active holds stay held. The
        period's earlier spend is then forgiven on purpose (a budget created
        mid-period starts with it instead). The previous value goes to
        Django's admin log (who, when, what)."""
        count = 0
        for budget in queryset:
            with transaction.atomic():
                window = (
                    BudgetWindow.objects.select_for_update()
                    .filter(
                        budget=budget,
                        period_start__lte=timezone.now(),
                        period_end__gt=timezone.now(),
                    )
                    .first()
                )
                if window is None or window.spent == 0:
                    continue
                previous = window.spent
                window.spent = 0
                window.save(update_fields=["spent"])
                self.log_change(
                    request,
                    budget,
                    f"Reset spend of window from {window.period_start:%Y-%m-%d %H:%M} "
                    f"(was ${previous.normalize():f}).",
                )
                count += 1
        self.message_user(request, f"Reset {count} window(s).")


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ["id", "org", "team", "user", "amount", "status", "created_at", "expires_at"]
    list_filter = ["status", "org"]
    list_select_related = ["org", "team__org", "user__org"]  # their __str__ reads the org
    paginator = LargeTablePaginator
    show_full_result_count = False
    readonly_fields = [f.name for f in Reservation._meta.fields] + ["window_ids"]
    actions = ["release_selected", "expire_overdue"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Release the selected holds")
    def release_selected(self, request: HttpRequest, queryset: QuerySet[Reservation]) -> None:
        released = 0
        for reservation in queryset.filter(status=Reservation.Status.ACTIVE):
            reservation_release(reservation)
            released += 1
        self.message_user(request, f"Released {released} hold(s).")

    @admin.action(description="Expire every overdue hold now (whatever is selected)")
    def expire_overdue(self, request: HttpRequest, queryset: QuerySet[Reservation]) -> None:
        expired = reservations_expire(limit=100000)
        self.message_user(request, f"Expired {expired} overdue hold(s).")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "org",
        "team",
        "is_admin",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["org", "is_admin"]
    readonly_fields = ["lookup_id", "created_at", "last_used_at", "revoked_at"]
    fields = ["org", "team", "name", "is_admin", "max_request_usd", *readonly_fields]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if not change:
            fresh, secret = ApiKey.generate(
                org=obj.org, team=obj.team, name=obj.name, is_admin=obj.is_admin
            )
            obj.lookup_id, obj.key_hash = fresh.lookup_id, fresh.key_hash
            super().save_model(request, obj, form, change)
            messages.warning(
                request,
                format_html(
                    "The new API key is <code>{}</code>. Copy it now: it is stored only as a "
                    "hash and is not shown again.",
                    secret,
                ),
            )
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected keys (takes effect within 60 s)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            key.revoke()
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


class AlertDeliveryAttemptInline(admin.TabularInline):
    model = AlertDeliveryAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["attempted_at", "status_code", "error", "duration_ms"]
    max_num = 0


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "org",
        "kind",
        "used_usd",
        "limit_usd",
        "created_at",
        "delivery_status",
        "attempts",
        "acknowledged_at",
    ]
    list_filter = ["kind", "delivery_status", "org"]
    readonly_fields = [f.name for f in Alert._meta.fields]
    inlines = [AlertDeliveryAttemptInline]
    actions = ["acknowledge"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Acknowledge (hide from the dashboard)")
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        count = queryset.filter(acknowledged_at__isnull=True).update(acknowledged_at=timezone.now())
        self.message_user(request, f"Acknowledged {count} alert(s).")
