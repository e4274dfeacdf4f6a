from django.urls import path

from . import api

urlpatterns = [
    path("audit/events", api.events, name="api-audit-events"),
    path("audit/changes", api.changes, name="api-audit-changes"),
]
