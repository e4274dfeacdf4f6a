"""Process-level bookkeeping shared by the apps."""

from django.db import models
from django.utils import timezone


class WorkerHeartbeat(models.Model):
    """The last time each Celery worker ran the heartbeat task: proof that work gets done."""

    hostname = models.CharField(max_length=200, unique=True)
    seen_at = models.DateTimeField(default=timezone.now)
    request_id = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"{self.hostname} @ {self.seen_at:%H:%M:%S}"
