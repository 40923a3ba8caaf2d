from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from budgets.audit import (
    Actor,
    api_key_values,
    audit_record,
    budget_address,
    budget_values,
    json_value,
    organization_values,
)
from budgets.models import (
    ZERO,
    Alert,
    AlertDeliveryAttempt,
    ApiKey,
    AuditEntry,
    Budget,
    BudgetWindow,
    EndUser,
    Organization,
    Reservation,
    Team,
)
from budgets.services import (
    alerts_judge,
    api_key_revoke,
    budget_seed_window,
    organization_time_zone_change,
    reservation_release,
    reservations_expire,
    time_for_people,
    webhook_test,
)
from config.hotpath.inputs import usd_for_people
from config.paginators import LargeTablePaginator

# Admin runs save_model and delete_model inside the transaction of its change
# view (and delete view), so the audit entry commits with the change; the
# bulk deletes and the actions below open their own.


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "time_zone", "strict", "fail_mode", "created_at"]
    search_fields = ["slug", "name"]
    actions = ["send_test_alert"]

    def save_model(self, request: HttpRequest, obj: Organization, form, change: bool) -> None:
        old = None
        if change:
            old = organization_values(Organization.objects.select_for_update().get(pk=obj.pk))
            if "time_zone" in form.changed_data:
                organization_time_zone_change(org_id=obj.pk, time_zone=obj.time_zone)
        super().save_model(request, obj, form, change)
        if change and "alerts_count_holds" in form.changed_data:
            # What the thresholds are judged on changed: holds counted now may
            # cross one, holds no longer counted may leave one re-armed.
            alerts_judge(org_id=obj.pk)
        audit_record(
            actor=Actor.of_request(request),
            org=obj,
            object_type="organization",
            object_id=obj.slug,
            action="update" if change else "create",
            old=old,
            new=organization_values(obj),
        )

    def delete_model(self, request: HttpRequest, obj: Organization) -> None:
        _audit_delete(request, obj, "organization", obj.slug, organization_values(obj))
        super().delete_model(request, obj)

    @admin.action(description="Send a test alert to the webhook")
    def send_test_alert(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        """POSTs a test payload to each selected org's webhook and says what
        came back (recorded in the audit log as "test_webhook")."""
        actor = Actor.of_request(request)
        for org in queryset:
            result = webhook_test(org=org, actor=actor)
            at = time_for_people(result.at, org.time_zone)
            if result.ok:
                answer = f"HTTP {result.status_code}"
            elif result.status_code is not None:
                answer = f"HTTP {result.status_code} (not delivered)"
            else:
                answer = f"failed: {result.error}"
            self.message_user(
                request,
                f"Test alert for {org.slug} at {at}: {answer} in {result.duration_ms} ms.",
                messages.SUCCESS if result.ok else messages.ERROR,
            )

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        for org in queryset:
            _audit_delete(request, org, "organization", org.slug, organization_values(org))
        super().delete_queryset(request, queryset)


def _audit_delete(
    request: HttpRequest, org: Organization, object_type: str, object_id: str, old: dict
) -> None:
    audit_record(
        actor=Actor.of_request(request),
        org=org,
        object_type=object_type,
        object_id=object_id,
        action="delete",
        old=old,
    )


def _audit_cascade(request: HttpRequest, budgets: QuerySet[Budget], keys: QuerySet[ApiKey]) -> None:
    """A team or end user deleted in admin takes its budgets and keys with it
    (on_delete=CASCADE): each is recorded as deleted, like a delete of its own."""
    for budget in budgets.select_related("org", "team", "user"):
        _audit_delete(request, budget.org, "budget", budget_address(budget), budget_values(budget))
    for key in keys.select_related("org", "team"):
        _audit_delete(request, key.org, "api_key", str(key.pk), api_key_values(key))


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "org", "name", "created_at"]
    list_filter = ["org"]
    search_fields = ["slug", "name"]

    def delete_model(self, request: HttpRequest, obj: Team) -> None:
        _audit_cascade(request, Budget.objects.filter(team=obj), ApiKey.objects.filter(team=obj))
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        _audit_cascade(
            request,
            Budget.objects.filter(team__in=queryset),
            ApiKey.objects.filter(team__in=queryset),
        )
        super().delete_queryset(request, queryset)


@admin.register(EndUser)
class EndUserAdmin(admin.ModelAdmin):
    list_display = ["external_id", "org", "created_at"]
    list_filter = ["org"]
    search_fields = ["external_id"]

    def delete_model(self, request: HttpRequest, obj: EndUser) -> None:
        _audit_cascade(request, Budget.objects.filter(user=obj), ApiKey.objects.none())
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[EndUser]) -> None:
        _audit_cascade(request, Budget.objects.filter(user__in=queryset), ApiKey.objects.none())
        super().delete_queryset(request, queryset)


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
    search_fields = ["org__slug", "team__slug", "user__external_id", "key__lookup_id"]
    autocomplete_fields = ["team", "user"]
    raw_id_fields = ["key"]
    inlines = [BudgetWindowInline]
    actions = ["reset_current_window"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Budget]:
        return super().get_queryset(request).select_related("org", "team", "user", "key")

    def save_model(self, request: HttpRequest, obj: Budget, form, change: bool) -> None:
        old = None
        if change:
            before = (
                Budget.objects.select_for_update(of=("self",))
                .select_related("org", "team", "user", "key")
                .get(pk=obj.pk)
            )
            old = budget_values(before)
        super().save_model(request, obj, form, change)
        # A new budget, or one moved to another period or subject, starts with
        # the spend and holds its scope already has in the current window.
        if not change or {"scope", "team", "user", "key", "period"} & set(form.changed_data):
            budget_seed_window(obj)
        # Its thresholds may have moved (or the seeded spend is over one).
        alerts_judge(org_id=obj.org_id, budget_id=obj.pk)
        audit_record(
            actor=Actor.of_request(request),
            org=obj.org,
            object_type="budget",
            object_id=budget_address(obj),
            action="update" if change else "create",
            old=old,
            new=budget_values(obj),
        )

    def delete_model(self, request: HttpRequest, obj: Budget) -> None:
        _audit_delete(request, obj.org, "budget", budget_address(obj), budget_values(obj))
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Budget]) -> None:
        for budget in queryset:
            _audit_delete(
                request, budget.org, "budget", budget_address(budget), budget_values(budget)
            )
        super().delete_queryset(request, queryset)

    @admin.display(description="spent")
    def spent(self, budget: Budget) -> str:
        window = budget.current_window()
        return usd_for_people(window.spent if window else ZERO)

    @admin.display(description="reserved")
    def reserved(self, budget: Budget) -> str:
        window = budget.current_window()
        return usd_for_people(window.reserved if window else ZERO)

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

    @admin.action(description="Reset the current window's spend (audited)")
    def reset_current_window(self, request: HttpRequest, queryset: QuerySet[Budget]) -> None:
        """Sets the current window's `spent` to 0; active holds stay held. The
        period's earlier spend is then forgiven on purpose (a budget created
        mid-period starts with it instead). The previous value goes to the
        audit log (action "reset_window") and to Django's admin log."""
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
                # Falling back below a threshold re-arms it.
                alerts_judge(org_id=budget.org_id, budget_id=budget.pk)
                audit_record(
                    actor=Actor.of_request(request),
                    org=budget.org,
                    object_type="budget",
                    object_id=budget_address(budget),
                    action="reset_window",
                    old={
                        "window_start": window.period_start.isoformat(),
                        "spent_usd": json_value(previous),
                    },
                    new={"window_start": window.period_start.isoformat(), "spent_usd": "0"},
                )
                self.log_change(
                    request,
                    budget,
                    f"Reset spend of window from {window.period_start:%Y-%m-%d %H:%M} "
                    f"(was {usd_for_people(previous)}).",
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
    fields = [
        "org",
        "team",
        "name",
        "is_admin",
        "max_request_usd",
        "allowed_models",
        *readonly_fields,
    ]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if not change:
            fresh, secret = ApiKey.generate(
                org=obj.org, team=obj.team, name=obj.name, is_admin=obj.is_admin
            )
            obj.lookup_id, obj.key_hash = fresh.lookup_id, fresh.key_hash
            super().save_model(request, obj, form, change)
            self._audit(request, obj, "create", None)
            messages.warning(
                request,
                format_html(
                    "The new API key is <code>{}</code>. Copy it now: it is stored only as a "
                    "hash and is not shown again.",
                    secret,
                ),
            )
            return
        old = api_key_values(ApiKey.objects.select_for_update().get(pk=obj.pk))
        super().save_model(request, obj, form, change)
        self._audit(request, obj, "update", old)

    def delete_model(self, request: HttpRequest, obj: ApiKey) -> None:
        _audit_delete(request, obj.org, "api_key", str(obj.pk), api_key_values(obj))
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.select_related("org", "team"):
            _audit_delete(request, key.org, "api_key", str(key.pk), api_key_values(key))
        super().delete_queryset(request, queryset)

    def _audit(self, request: HttpRequest, key: ApiKey, action: str, old: dict | None) -> None:
        audit_record(
            actor=Actor.of_request(request),
            org=key.org,
            object_type="api_key",
            object_id=str(key.pk),
            action=action,
            old=old,
            new=api_key_values(key),
        )

    @admin.action(description="Revoke selected keys (takes effect within 60 s)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        actor = Actor.of_request(request)
        revoked = sum(api_key_revoke(key=key, actor=actor) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).")


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
        "model",
        "used",
        "limit",
        "fired_at",
        "delivery_status",
        "attempts",
        "acknowledged_at",
    ]
    list_filter = ["kind", "delivery_status", "org"]
    # Every field read only, money and the firing time as people read them.
    fields = readonly_fields = [
        {"used_usd": "used", "limit_usd": "limit", "created_at": "fired_at"}.get(f.name, f.name)
        for f in Alert._meta.fields
        if f.name != "id"
    ]
    inlines = [AlertDeliveryAttemptInline]
    actions = ["acknowledge"]

    list_select_related = ["org", "budget__org", "budget__team", "budget__user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="used", ordering="used_usd")
    def used(self, alert: Alert) -> str:
        return usd_for_people(alert.used_usd)

    @admin.display(description="limit", ordering="limit_usd")
    def limit(self, alert: Alert) -> str | None:
        # An unpriced model's alert has no budget, hence no limit (admin's "-").
        return None if alert.limit_usd is None else usd_for_people(alert.limit_usd)

    @admin.display(description="fired", ordering="created_at")
    def fired_at(self, alert: Alert) -> str:
        """In the org's zone, so that yesterday's alert does not read as today's."""
        return time_for_people(alert.created_at, alert.org.time_zone)

    @admin.action(description="Acknowledge (hide from the dashboard)")
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        count = queryset.filter(acknowledged_at__isnull=True).update(acknowledged_at=timezone.now())
        self.message_user(request, f"Acknowledged {count} alert(s).")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read only: entries are written by the changes they record, and the
    database refuses to change or delete one."""

    list_display = [
        "at",
        "org",
        "object_type",
        "object_id",
        "action",
        "actor_kind",
        "actor_label",
        "request_id",
        "client_addr",
    ]
    list_filter = ["object_type", "action", "actor_kind", ("at", admin.DateFieldListFilter), "org"]
    search_fields = ["object_id", "actor_label", "request_id"]
    paginator = LargeTablePaginator
    show_full_result_count = False
    list_select_related = ["org"]
    readonly_fields = [f.name for f in AuditEntry._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False
