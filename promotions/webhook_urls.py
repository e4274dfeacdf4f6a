"""Forge webhooks: mounted at /webhooks/ by gitopsportal/urls.py."""

from django.urls import path

from . import webhooks

app_name = "webhooks"
urlpatterns = [
    path("forge/<slug:repository>/", webhooks.forge_webhook, name="forge"),
]
