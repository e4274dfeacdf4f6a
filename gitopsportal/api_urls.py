"""The JSON API: /api/v1/... and the OpenAPI schema at /api/schema."""

from django.urls import include, path

from .openapi import schema_view

urlpatterns = [
    path("schema", schema_view, name="api-schema"),
    path("v1/", include("inventory.api_urls")),
    path("v1/", include("promotions.api_urls")),
    path("v1/", include("rollbacks.api_urls")),
    path("v1/", include("audit.api_urls")),
]
