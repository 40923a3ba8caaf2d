from django.urls import path

from dashboard import org_views, views

urlpatterns = [
    path("", views.index, name="dashboard"),
    path("dashboard/export", views.export, name="dashboard_export"),
    path(
        "dashboard/export/chargeback", views.export_chargeback, name="dashboard_export_chargeback"
    ),
    path("docs/api/", views.api_docs, name="api_docs"),
    path("dashboard/budgets/new", org_views.budget_new, name="budget_new"),
    path("dashboard/budgets/edit", org_views.budget_edit, name="budget_edit"),
    path("dashboard/budgets/delete", org_views.budget_remove, name="budget_delete"),
    path("dashboard/org", org_views.org_settings, name="org_settings"),
    path("dashboard/org/keys", org_views.key_create, name="key_create"),
    path("dashboard/org/keys/revoke", org_views.key_revoke, name="key_revoke"),
    path("dashboard/org/webhook", org_views.webhook_set, name="webhook_set"),
    path("dashboard/org/members", org_views.member_add, name="member_add"),
    path("dashboard/org/members/role", org_views.member_update, name="member_update"),
]
