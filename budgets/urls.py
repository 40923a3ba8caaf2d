from django.urls import path

from budgets import views

urlpatterns = [
    path("v1/audit", views.audit, name="audit"),
    path("v1/org", views.organization, name="organization"),
    path("v1/teams/<str:slug>", views.team, name="team"),
    path("v1/keys/<str:lookup_id>", views.api_key, name="api_key"),
]
