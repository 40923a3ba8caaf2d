from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.urls import include, path

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
    path("", include("tracking.urls")),
    path("", include("dashboard.urls")),
]
