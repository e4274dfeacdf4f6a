"""The OIDC URLs plus the API probe, so bearer-token requests of SSO users meet the provider."""

from django.urls import path

from tests.security.api_probe_urls import whoami
from tests.security.oidc_urls import urlpatterns as oidc_urlpatterns

urlpatterns = [*oidc_urlpatterns, path("api/probe/whoami", whoami, name="probe-whoami")]
