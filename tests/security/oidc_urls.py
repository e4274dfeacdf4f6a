"""The project's URLs with the OIDC endpoints mounted (as when OIDC_ENABLED is on at start-up)."""

from django.urls import include, path

from gitopsportal.urls import urlpatterns as portal_urlpatterns

urlpatterns = [
    *[p for p in portal_urlpatterns if str(p.pattern) != "oidc/"],
    path("oidc/", include("mozilla_django_oidc.urls")),
]
