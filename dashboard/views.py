from __future__ import annotations

import re
from datetime import timedelta

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone

from budgets.models import Organization, Team
from config.hotpath import inputs
from config.hotpath.errors import ApiError, invalid
from dashboard import access, selection, signins
from dashboard import export as export_
from dashboard.selection import DEFAULT_RANGE, RANGES
from tracking.selectors import prices_in_force
from tracking.views import chargeback_file_name, chargeback_query, csv_text

_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")
RANGE_LABELS = {
    "24h": "24 hours",
    "7d": "7 days",
    "30d": "30 days",
    "mtd": "Month to date",
    "last_month": "Last month",
    "custom": "Custom",
}


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """The dashboard: a shell that fills itself with one summary fetch
    (GET /v1/dashboard/summary) and then listens on /ws/spend/."""
    requested = request.GET.get("org") or None
    staff = request.user.is_staff
    try:
        org = access.organization_for(
            request.user, requested or (access.landing_org(request.user) if staff else None)
        )
    except ApiError as exc:
        return render(
            request, "dashboard/no_access.html", {"message": exc.message}, status=exc.status
        )
    if staff and requested:
        access.remember_viewed(request.user, org)
    # The URL's selection; the page's summary request says what is wrong
    # with one that is not valid (a banner), so a bad link still opens.
    range_ = request.GET.get("range")
    config = {
        "summaryUrl": "/v1/dashboard/summary",
        "holdsUrl": "/v1/dashboard/holds",
        "socketPath": "/ws/spend/",
        "org": org.slug,
        "switchOrg": staff,
        "range": range_ if range_ in RANGES else DEFAULT_RANGE,
        "from": request.GET.get("from") or "",
        "to": request.GET.get("to") or "",
        "team": request.GET.get("team") or "",
        "user": request.GET.get("user") or "",
        "model": request.GET.get("model") or "",
        "tag": request.GET.get("tag") or "",  # a tag filter, name=value
    }
    orgs = access.switcher_orgs() if staff else []
    powers = access.powers_for(request.user, org)
    return render(
        request,
        "dashboard/index.html",
        {
            "org": org,
            "orgs": orgs,
            "config": config,
            "ranges": [(r, RANGE_LABELS[r]) for r in RANGES],
            "prices": prices_in_force(),
            "powers": _powers_config(org, powers),
        },
    )


def _powers_config(org: Organization, powers: access.Powers) -> dict | None:
    """What the page's edit controls need (dashboard/budget_links.js); None
    for a viewer, whose page has none."""
    if not powers.edits_budgets:
        return None
    teams = Team.objects.filter(id__in=powers.team_ids).order_by("slug")
    return {
        "org": org.slug,
        "editAll": powers.is_org_admin,
        "teams": list(teams.values_list("slug", flat=True)),
    }


def export(request: HttpRequest) -> HttpResponse:
    """GET /dashboard/export?format=csv|json&range=&from=&to=&team=&user=&model=&org=:
    what the page shows for that selection, as a download. The signed-in session is
    the credential (no API key); the org is chosen as for the page: members
    their own, staff the switcher's (`org`, else where they land)."""
    try:
        if not request.user.is_authenticated:
            raise ApiError(401, "unauthenticated", "Sign in to download the dashboard.")
        fmt = request.GET.get("format") or "csv"
        if fmt not in export_.FORMATS:
            raise invalid("format", f"'format' must be one of {', '.join(export_.FORMATS)}.")
        chosen = selection.parse(request.GET)
        requested = inputs.identifier({"org": request.GET.get("org") or None}, "org")
        if request.user.is_staff and requested is None:
            requested = access.landing_org(request.user)
        org = access.organization_for(request.user, requested)
        body = export_.summary(org, chosen)
    except ApiError as exc:
        response: HttpResponse = JsonResponse(exc.body(), status=exc.status)
        response["Cache-Control"] = "no-store"
        return response
    stem = "-".join(["tollgate", org.slug, *chosen.query().values()])
    # Ids may hold quotes or non-ASCII letters, which a header cannot carry.
    name = f"{_UNSAFE_IN_FILE_NAME.sub('_', stem)}.{fmt}"
    if fmt == "json":
        response = JsonResponse(body)
    else:
        response = HttpResponse(export_.csv_text(body), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response


def export_chargeback(request: HttpRequest) -> HttpResponse:
    """GET /dashboard/export/chargeback?tag=&month=&org=: the chargeback
    report of GET /v1/reports/chargeback (a month by team and tag value, CSV)
    for the signed-in session's org, chosen as for the page's export."""
    try:
        if not request.user.is_authenticated:
            raise ApiError(401, "unauthenticated", "Sign in to download the report.")
        requested = inputs.identifier({"org": request.GET.get("org") or None}, "org")
        if request.user.is_staff and requested is None:
            requested = access.landing_org(request.user)
        org = access.organization_for(request.user, requested)
        query = chargeback_query(org, request.GET, team=None, now=timezone.now())
    except ApiError as exc:
        response: HttpResponse = JsonResponse(exc.body(), status=exc.status)
        response["Cache-Control"] = "no-store"
        return response
    response = HttpResponse(csv_text(query), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{chargeback_file_name(org, query)}"'
    response["Cache-Control"] = "no-store"
    return response


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
            return locked_out(request, wait)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form) -> HttpResponse:
        signins.sign_in_succeeded(self._throttle_key)
        return super().form_valid(form)


def locked_out(request: HttpRequest, wait: float) -> HttpResponse:
    """The sign-in lockout as a page (429, Retry-After): when to try again,
    in minutes and as a time."""
    response = render(
        request,
        "registration/locked_out.html",
        {
            "minutes": int(wait) // 60 + 1,
            "retry_at": timezone.now() + timedelta(seconds=int(wait) + 1),
            "login_url": request.get_full_path(),
        },
        status=429,
    )
    response["Retry-After"] = str(int(wait) + 1)
    return response
