from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import defaults

from config.hotpath.errors import ApiError
from dashboard.views import ThrottledLoginView

urlpatterns = [
    # Admin's sign-in, with the same limit on failed attempts as the dashboard's.
    path(
        "admin/login/",
        ThrottledLoginView.as_view(
            template_name="admin/login.html",
            authentication_form=AdminAuthenticationForm,
            extra_context={
                "site_header": admin.site.site_header,
                "site_title": admin.site.site_title,
            },
        ),
    ),
    path("admin/", admin.site.urls),
    # Sign-in for dashboard users (password changes and resets go through staff).
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("budgets.urls")),
    path("", include("tracking.urls")),
    path("", include("dashboard.urls")),
]


# Requests under /v1/ that reach Django (unknown API routes, /v1/usage) get
# API.md's error shape, not an HTML page.


def _api_error(request: HttpRequest, error: ApiError) -> HttpResponse | None:
    if not request.path.startswith("/v1/"):
        return None
    response = JsonResponse(error.body(), status=error.status)
    response["Cache-Control"] = "no-store"
    return response


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    error = ApiError(404, "not_found", "No API endpoint has this path.")
    return _api_error(request, error) or defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    error = ApiError(400, "malformed_query", "The request could not be read.")
    return _api_error(request, error) or defaults.bad_request(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    error = ApiError(500, "internal_error", "Internal error.")
    return _api_error(request, error) or defaults.server_error(request)


handler404 = not_found
handler400 = bad_request
handler500 = server_error
