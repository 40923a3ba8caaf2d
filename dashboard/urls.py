from django.urls import path

from dashboard import views

urlpatterns = [
    path("", views.index, name="dashboard"),
    path("docs/api/", views.api_docs, name="api_docs"),
]
