"""URLconf of the async Django baseline (loadtests.baselines.async_settings only)."""

from __future__ import annotations

from django.urls import path

from loadtests.baselines import async_views

urlpatterns = [
    path("v1/budget/reservations", async_views.reserve),
]
