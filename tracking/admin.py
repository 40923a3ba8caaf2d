from django.contrib import admin
from django.db import transaction

from budgets.admin import MoneyAdmin, money
from budgets.audit import Actor, audit_record, json_value
from config.paginators import LargeTablePaginator
from tracking.models import DailyRollup, HourlyRollup, ModelAlias, Price, RequestEvent
from tracking.services import PRICE_FIELDS


def _price_values(price: Price) -> dict:
    return {
        name: json_value(getattr(price, name))
        for name in ["provider", "model", "effective_from", *PRICE_FIELDS]
    }


def _audit_price(request, price: Price, action: str, old: dict | None, new: dict | None) -> None:
    audit_record(
        actor=Actor.of_request(request),
        org=None,
        object_type="price",
        object_id=f"{price.provider}/{price.model}",
        action=action,
        old=old,
        new=new,
    )


@admin.register(Price)
class PriceAdmin(MoneyAdmin):
    list_display = ["model", "provider", "effective_from", "input_per_token", "output_per_token"]
    list_filter = ["provider"]
    search_fields = ["model"]

    # Audited like load_prices; admin runs these in its view's transaction.
    def save_model(self, request, obj: Price, form, change: bool) -> None:
        old = _price_values(Price.objects.select_for_update().get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        _audit_price(request, obj, "update" if change else "create", old, _price_values(obj))

    def delete_model(self, request, obj: Price) -> None:
        _audit_price(request, obj, "delete", _price_values(obj), None)
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request, queryset) -> None:
        for price in queryset:
            _audit_price(request, price, "delete", _price_values(price), None)
        super().delete_queryset(request, queryset)


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    list_display = ["name", "model", "org"]
    list_filter = ["org"]
    search_fields = ["name", "model"]
    list_select_related = ["org"]


@admin.register(RequestEvent)
class RequestEventAdmin(admin.ModelAdmin):
    list_display = [
        "event_id",
        "org",
        "team",
        "user",
        "model",
        money("cost_usd", "cost"),
        "priced",
        "status",
        "started_at",
    ]
    list_filter = ["status", "priced", "org"]
    search_fields = ["event_id", "model"]
    list_select_related = ["org", "team__org", "user__org"]  # their __str__ reads the org
    paginator = LargeTablePaginator
    show_full_result_count = False
    fields = readonly_fields = [
        money(f.name, "cost") if f.name == "cost_usd" else f.name for f in RequestEvent._meta.fields
    ]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Events are the ledger the budget windows and rollups were added up
        # from: deleting one here would leave both counting it. Old events
        # go with `manage.py prune_events`, after they are rolled up. (No
        # action left also drops the list's checkbox column, which halves a
        # page's rendering time in the hot path's process.)
        return False

    def get_ordering(self, request) -> list[str]:
        # One org's events come newest first from its (org, started_at) index;
        # across orgs that index cannot order them, so the unfiltered list
        # shows the newest received (primary key order) instead of sorting
        # the whole table.
        if "org__id__exact" in request.GET:
            return ["-started_at"]
        return ["-id"]


@admin.register(HourlyRollup)
class HourlyRollupAdmin(admin.ModelAdmin):
    list_display = ["hour", "org", "team", "user", "model", "requests", money("cost_usd", "cost")]
    list_filter = ["org"]
    list_select_related = ["org", "team__org", "user__org"]  # their __str__ reads the org
    paginator = LargeTablePaginator
    show_full_result_count = False
    fields = readonly_fields = [
        money(f.name, "cost") if f.name == "cost_usd" else f.name for f in HourlyRollup._meta.fields
    ]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(DailyRollup)
class DailyRollupAdmin(admin.ModelAdmin):
    list_display = ["day", "org", "team", "user", "model", "requests", money("cost_usd", "cost")]
    list_filter = ["org"]
    list_select_related = ["org", "team__org", "user__org"]  # their __str__ reads the org
    paginator = LargeTablePaginator
    show_full_result_count = False
    fields = readonly_fields = [
        money(f.name, "cost") if f.name == "cost_usd" else f.name for f in DailyRollup._meta.fields
    ]

    def has_add_permission(self, request) -> bool:
        return False
