"""GitOps Portal: what runs where under Argo CD, promotions by PR, rollbacks by revert, audit."""

from .celery import app as celery_app

__all__ = ["celery_app"]
