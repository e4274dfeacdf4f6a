from django.urls import path

from . import api

urlpatterns = [
    path("deployments", api.deployments, name="api-deployments"),
    path("applications/<str:name>/history", api.application_history, name="api-application-history"),
]
