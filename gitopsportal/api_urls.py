"""The JSON API: /api/v1/... and the OpenAPI schema at /api/schema."""

from django.urls import include, path

urlpatterns = [
    path("v1/", include("inventory.api_urls")),
]
