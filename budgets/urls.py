from django.urls import path

from budgets import views

urlpatterns = [
    path("v1/audit", views.audit, name="audit"),
    path("v1/org", views.organization, name="organization"),
]
