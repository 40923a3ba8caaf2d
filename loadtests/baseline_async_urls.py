"""URLconf of the async Django baseline (loadtests.baseline_async_settings only)."""

from __future__ import annotations

from django.urls import path

from loadtests import baseline_async_views

urlpatterns = [
    path("v1/budget/reservations", baseline_async_views.reserve),
]
