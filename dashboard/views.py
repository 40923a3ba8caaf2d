from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from budgets.models import Organization
from config.hotpath.errors import ApiError
from dashboard import access, signins
from dashboard.api import DEFAULT_RANGE, RANGES
from tracking.selectors import prices_in_force

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
            "prices": prices_in_force(),
        },
    )


def api_docs(request: HttpRequest) -> HttpResponse:
    """The API reference for people: the OpenAPI document (GET /v1/openapi.json)
    rendered by the vendored Swagger UI. Public, like the document."""
    return render(request, "dashboard/api_docs.html", {"document_url": "/v1/openapi.json"})


class ThrottledLoginView(auth_views.LoginView):
    """Django's sign-in, with attempts limited per client network and username
    across every server process (dashboard/signins.py); used for the
    dashboard and for admin."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        self._throttle_key = signins.attempt_key(request, request.POST.get("username", ""))
        wait = signins.sign_in_attempt(self._throttle_key)
        if wait is not None:
            response = HttpResponse(
                f"Too many failed sign-ins. Try again in {int(wait) // 60 + 1} minute(s).",
                status=429,
                content_type="text/plain",
            )
            response["Retry-After"] = str(int(wait) + 1)
            return response
        return super().post(request, *args, **kwargs)

    def form_valid(self, form) -> HttpResponse:
        signins.sign_in_succeeded(self._throttle_key)
        return super().form_valid(form)
