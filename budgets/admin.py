from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import forms
from django.contrib import admin, messages
from django.db import IntegrityError, models, transaction
from django.db.models import F, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, NullIf
from django.http import HttpRequest, HttpResponseRedirect
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
    team_values,
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
    budget_create,
    budget_delete,
    budget_update,
    organization_time_zone_change,
    reservation_release,
    reservations_expire,
    time_for_people,
    webhook_test,
)
from config.hotpath.inputs import usd_for_people
from config.paginators import LargeTablePaginator


class MoneyInput(forms.NumberInput):
    """An amount field showing its value as written ("122.45", "0.0000025"),
    not at the column's ten decimal places ("122.4500000000")."""

    def format_value(self, value):
        if isinstance(value, str):
            try:
                value = Decimal(value)
            except InvalidOperation:
                return value  # what was typed, shown back with its error
        if isinstance(value, Decimal) and value.is_finite():
            value = value.normalize()
            if value.as_tuple().exponent > -2:
                value = value.quantize(Decimal("0.01"))
            return format(value, "f")
        return super().format_value(value)


def constraint_words(model: type[models.Model], error: IntegrityError) -> str:
    """What a constraint the database refused a save for means, in the words
    of the model's constraint (its violation_error_message)."""
    diag = getattr(error.__cause__, "diag", None)
    name = getattr(diag, "constraint_name", None)
    for constraint in model._meta.constraints:
        if constraint.name == name:
            return constraint.get_violation_error_message()
    return f"The database refused the change ({name or 'a constraint'}); nothing was saved."


class MoneyAdmin(admin.ModelAdmin):
    """Amount inputs as people write them (MoneyInput), and a save the
    database refuses (one that passed the form's checks, e.g. a duplicate
    created meanwhile) said in words instead of a server error."""

    formfield_overrides = {models.DecimalField: {"widget": MoneyInput}}

    def changeform_view(self, request: HttpRequest, *args, **kwargs):
        try:
            # Admin's own transaction around the save rolls it back whole.
            return super().changeform_view(request, *args, **kwargs)
        except IntegrityError as error:
            self.message_user(request, constraint_words(self.model, error), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


class OrgTeamsForm(forms.ModelForm):
    """A form whose team must be one of its org's. Each team is named with its
    org ("acme/search"); budgets/admin/org_teams.js shows only the picked
    org's, and clean() refuses another org's team in words."""

    class Media:
        js = ["budgets/admin/org_teams.js"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        team = self.fields.get("team")
        if team is not None:
            team.queryset = team.queryset.select_related("org").order_by("org__slug", "slug")

    def clean(self):
        cleaned = super().clean()
        team, org = cleaned.get("team"), cleaned.get("org")
        if team is not None and org is not None and team.org_id != org.pk:
            self.add_error("team", f"Team {team} is not one of {org.slug}'s teams.")
        return cleaned


def money(field: str, description: str | None = None):
    """A list column or read-only field showing an amount as money ("$122.45")."""

    @admin.display(description=description or field.removesuffix("_usd"), ordering=field)
    def show(obj) -> str | None:
        value = getattr(obj, field)
        return None if value is None else usd_for_people(value)  # None: admin's "-"

    show.__name__ = field
    return show


# Admin runs save_model and delete_model inside the transaction of its change
# view (and delete view), so the audit entry commits with the change; the
# bulk deletes and the actions below open their own.


@admin.register(Organization)
class OrganizationAdmin(MoneyAdmin):
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
class TeamAdmin(MoneyAdmin):
    list_display = ["slug", "org", "name", "created_at"]
    list_filter = ["org"]
    search_fields = ["slug", "name"]

    def save_model(self, request: HttpRequest, obj: Team, form, change: bool) -> None:
        old = team_values(Team.objects.select_for_update().get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        new = team_values(obj)
        if new != old:
            audit_record(
                actor=Actor.of_request(request),
                org=obj.org,
                object_type="team",
                object_id=obj.slug,
                action="update" if change else "create",
                old=old,
                new=new,
            )

    def delete_model(self, request: HttpRequest, obj: Team) -> None:
        _audit_cascade(request, Budget.objects.filter(team=obj), ApiKey.objects.filter(team=obj))
        _audit_delete(request, obj.org, "team", obj.slug, team_values(obj))
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        _audit_cascade(
            request,
            Budget.objects.filter(team__in=queryset),
            ApiKey.objects.filter(team__in=queryset),
        )
        for team in queryset.select_related("org"):
            _audit_delete(request, team.org, "team", team.slug, team_values(team))
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
    fields = readonly_fields = ["period_start", "period_end", money("spent"), money("reserved")]
    can_delete = False
    max_num = 0
    ordering = ["-period_start"]


@admin.register(Budget)
class BudgetAdmin(MoneyAdmin):
    # The name already says org, scope, subject, period and limit: the numbers
    # that change come right after it, within 1440 px beside the filters.
    list_display = [
        "__str__",
        "models",
        "used_pct",
        "spent",
        "reserved",
        money("limit_usd", "limit"),
        "resets_at",
        "enforce",
    ]
    list_filter = ["scope", "period", "enforce", "org"]
    search_fields = [
        "org__slug",
        "team__slug",
        "user__external_id",
        "key__lookup_id",
        "tag",
        "model_filter",
    ]
    form = OrgTeamsForm
    autocomplete_fields = ["user"]
    raw_id_fields = ["key"]
    inlines = [BudgetWindowInline]
    actions = ["reset_current_window"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Budget]:
        # The current window's numbers in the list's one query (sortable),
        # rather than a window query per row and column.
        now = timezone.now()
        window = BudgetWindow.objects.filter(
            budget=OuterRef("pk"), period_start__lte=now, period_end__gt=now
        )
        return (
            super()
            .get_queryset(request)
            .select_related("org", "team", "user", "key")
            .annotate(
                window_spent=Subquery(window.values("spent")[:1]),
                window_reserved=Subquery(window.values("reserved")[:1]),
                window_end=Subquery(window.values("period_end")[:1]),
            )
            .annotate(
                used_ratio=(
                    Coalesce(F("window_spent"), Value(ZERO))
                    + Coalesce(F("window_reserved"), Value(ZERO))
                )
                * 100
                / NullIf(F("limit_usd"), Value(ZERO))
            )
        )

    def save_model(self, request: HttpRequest, obj: Budget, form, change: bool) -> None:
        actor = Actor.of_request(request)
        if not change:
            budget_create(obj, actor=actor)
            return
        # A budget moved to another period or subject starts with the spend
        # and holds its new scope already has in the current window.
        moved = bool(
            {"scope", "team", "user", "key", "tag", "model_filter", "period"}
            & set(form.changed_data)
        )
        budget_update(obj, actor=actor, moved=moved)

    def delete_model(self, request: HttpRequest, obj: Budget) -> None:
        budget_delete(obj, actor=Actor.of_request(request))

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Budget]) -> None:
        for budget in queryset:
            _audit_delete(
                request, budget.org, "budget", budget_address(budget), budget_values(budget)
            )
        super().delete_queryset(request, queryset)

    @admin.display(description="models", ordering="model_filter")
    def models(self, budget: Budget) -> str:
        """Which models it counts: its filter, or every model."""
        return budget.model_filter or "all"

    @admin.display(description="spent", ordering="window_spent")
    def spent(self, budget: Budget) -> str:
        return usd_for_people(budget.window_spent or ZERO)

    @admin.display(description="reserved", ordering="window_reserved")
    def reserved(self, budget: Budget) -> str:
        return usd_for_people(budget.window_reserved or ZERO)

    @admin.display(description="used %", ordering="used_ratio")
    def used_pct(self, budget: Budget) -> str:
        """Spent and held of the limit in the current window (none yet: 0)."""
        if budget.used_ratio is None:
            return "-"  # a zero limit
        return f"{budget.used_ratio:.1f}%"

    @admin.display(description="resets at", ordering="window_end")
    def resets_at(self, budget: Budget) -> str:
        if budget.period == Budget.Period.TOTAL:
            return "never"
        if budget.window_end is None:
            return "-"
        return time_for_people(budget.window_end, budget.org.time_zone)

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
    list_display = [
        "id",
        "org",
        "team",
        "user",
        money("amount"),
        money("settled"),
        "status",
        "created_at",
        "expires_at",
    ]
    list_filter = ["status", "org"]
    list_select_related = ["org", "team__org", "user__org"]  # their __str__ reads the org
    paginator = LargeTablePaginator
    show_full_result_count = False
    # Every field read only, amounts as money.
    fields = readonly_fields = [
        money(f.name) if f.name in ("amount", "settled") else f.name
        for f in Reservation._meta.fields
    ]
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
class ApiKeyAdmin(MoneyAdmin):
    list_display = [
        "__str__",
        "org",
        "team",
        "is_admin",
        money("max_request_usd", "max per request"),
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
    form = OrgTeamsForm
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
