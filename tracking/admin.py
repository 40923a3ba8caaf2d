from django.contrib import admin

from tracking.models import Price


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ["model", "provider", "effective_from", "input_per_token", "output_per_token"]
    list_filter = ["provider"]
    search_fields = ["model"]
