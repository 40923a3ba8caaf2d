"""URLconf of the sync Django baseline (loadtests.baseline_settings only)."""

from __future__ import annotations

from django.urls import path

from loadtests import baseline_views

urlpatterns = [
    path("v1/budget/reservations", baseline_views.reserve),
]
