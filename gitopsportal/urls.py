"""URL map: pages per app, the JSON API under /api/v1/, health endpoints."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from insight.views import prometheus_metrics as insight_metrics_view

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("accounts.urls")),
    path("inventory/", include("inventory.urls")),
    path("promotions/", include("promotions.urls")),
    path("rollbacks/", include("rollbacks.urls")),
    path("audit/", include("audit.urls")),
    path("insight/", include("insight.urls")),
    path("metrics", insight_metrics_view, name="metrics"),
    path("api/", include("gitopsportal.api_urls")),
    path("webhooks/", include("promotions.webhook_urls")),
    path("django-admin/", admin.site.urls),
]

if settings.OIDC_ENABLED:
    urlpatterns.append(path("oidc/", include("mozilla_django_oidc.urls")))

handler404 = "api.http.api_not_found"
