"""URLconf of the sync Django baseline (loadtests.baselines.sync_settings only)."""

from __future__ import annotations

from django.urls import path

from loadtests.baselines import sync_views

urlpatterns = [
    path("v1/budget/reservations", sync_views.reserve),
]
