from django.urls import path

from dashboard import views

urlpatterns = [
    path("", views.index, name="dashboard"),
    path("dashboard/export", views.export, name="dashboard_export"),
    path(
        "dashboard/export/chargeback", views.export_chargeback, name="dashboard_export_chargeback"
    ),
    path("docs/api/", views.api_docs, name="api_docs"),
]
