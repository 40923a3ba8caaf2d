from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from budgets.errors import ApiError
from budgets.models import Organization
from dashboard import access
from dashboard.summary import DEFAULT_RANGE, RANGES

RANGE_LABELS = {"24h": "24 hours", "7d": "7 days", "30d": "30 days", "mtd": "Month to date"}


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """The dashboard: a shell that fills itself with one summary fetch
    (GET /v1/dashboard/summary) and then listens on /ws/spend/."""
    try:
        org = access.organization_for(request.user, request.GET.get("org") or None)
    except ApiError as exc:
        return render(
            request, "dashboard/no_access.html", {"message": exc.message}, status=exc.status
        )
    range_ = request.GET.get("range")
    config = {
        "summaryUrl": "/v1/dashboard/summary",
        "socketPath": "/ws/spend/",
        "org": org.slug,
        "switchOrg": request.user.is_staff,
        "range": range_ if range_ in RANGES else DEFAULT_RANGE,
        "team": request.GET.get("team") or "",
    }
    orgs = Organization.objects.order_by("slug") if request.user.is_staff else []
    return render(
        request,
        "dashboard/index.html",
        {
            "org": org,
            "orgs": orgs,
            "config": config,
            "ranges": [(r, RANGE_LABELS[r]) for r in RANGES],
        },
    )
