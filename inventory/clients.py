"""Build the Argo CD client of an instance: the one factory, its timeouts from settings.

The poller, the watcher, promotions' live reads and the drift page all reach Argo CD through
`argocd_client_for`, so one setting changes every timeout.
"""

from __future__ import annotations

from django.conf import settings

from integrations.argocd import ArgoCDClient

from .models import ArgoInstance


def argocd_client_for(instance: ArgoInstance, *, read_timeout: float | None = None) -> ArgoCDClient:
    """Return the Argo CD client of an instance (the token never leaves this call).

    `read_timeout` shortens the read timeout for reads a page waits for (never lengthens it).
    """
    read = settings.ARGOCD_READ_TIMEOUT_SECONDS
    return ArgoCDClient(
        instance.url,
        str(instance.token or ""),
        verify_tls=instance.verify_tls,
        allow_http=instance.allow_http,
        timeout=(settings.ARGOCD_CONNECT_TIMEOUT_SECONDS, min(read, read_timeout) if read_timeout else read),
    )
