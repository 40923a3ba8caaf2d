from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from budgets.models import Budget, Organization


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """Placeholder overview until the dashboard issue lands: the budgets of the
    organizations this login may see (staff see all)."""
    orgs = Organization.objects.all() if request.user.is_staff else Organization.objects.none()
    budgets = Budget.objects.filter(org__in=orgs).select_related("org", "team", "user")
    return render(request, "dashboard/index.html", {"orgs": orgs, "budgets": budgets})
