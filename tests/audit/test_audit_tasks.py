"""The periodic checkpoint task runs on a real worker and is safe to run twice."""

from __future__ import annotations

import pytest
from django.conf import settings

from audit.bundle import verify_checkpoint
from audit.models import AuditCheckpoint
from audit.services import audit_event_record, checkpoint_as_record
from audit.signing import verification_keys


def test_the_checkpoint_is_scheduled_periodically():
    entry = settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
    assert entry["task"] == "audit.tasks.audit_checkpoint_create_task"
    assert entry["schedule"] == settings.AUDIT_CHECKPOINT_INTERVAL_SECONDS


@pytest.mark.worker
def test_a_real_worker_signs_the_chain_head_once(celery_worker_process):
    from audit.tasks import audit_checkpoint_create_task

    for i in range(3):
        audit_event_record(action="deployment.observed", message=f"e{i}")
    head = audit_checkpoint_create_task.delay().get(timeout=30)
    assert head == 3
    assert audit_checkpoint_create_task.delay().get(timeout=30) is None  # already signed: nothing to do
    checkpoint = AuditCheckpoint.objects.get()
    assert checkpoint.event_count == 3
    assert verify_checkpoint(checkpoint_as_record(checkpoint), verification_keys()) is None
