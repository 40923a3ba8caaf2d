from django.urls import path

from tracking import views

urlpatterns = [
    path("v1/usage", views.usage, name="usage"),
    path("v1/reports/chargeback", views.chargeback, name="chargeback"),
]
