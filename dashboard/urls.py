from django.urls import path

from dashboard import org_views, views

urlpatterns = [
    path("", views.index, name="dashboard"),
    path("dashboard/export", views.export, name="dashboard_export"),
    path("docs/api/", views.api_docs, name="api_docs"),
    path("dashboard/budgets/new", org_views.budget_new, name="budget_new"),
    path("dashboard/budgets/edit", org_views.budget_edit, name="budget_edit"),
    path("dashboard/budgets/delete", org_views.budget_remove, name="budget_delete"),
]
