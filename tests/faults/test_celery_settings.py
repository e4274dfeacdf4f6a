"""Celery settings that keep late acknowledgement safe, read from the running configuration.

With acks_late on Redis, a message a worker took but did not acknowledge is redelivered once the
visibility timeout passes. If a task could still be running (or waiting to retry) by then, it runs
twice at once. So: every retry countdown < the task hard time limit < the visibility timeout.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

from gitopsportal.celery import app
from tests.conftest import ROOT, subprocess_env


def _tasks():
    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


def test_retry_countdowns_stay_below_the_hard_limit_below_the_visibility_timeout():
    conf = app.conf
    visibility = conf.broker_transport_options.get("visibility_timeout")
    assert visibility == settings.CELERY_VISIBILITY_TIMEOUT
    assert conf.result_backend_transport_options.get("visibility_timeout") == visibility
    hard, soft = conf.task_time_limit, conf.task_soft_time_limit
    assert soft < hard < visibility, (soft, hard, visibility)
    assert hard > settings.CELERY_RETRY_BACKOFF_MAX

    # The promotion tasks' own backoff, even when a forge asks for an hour (Retry-After: 3600).
    from promotions.tasks import backoff

    for retries in range(12):
        assert backoff(retries, None) <= settings.CELERY_RETRY_BACKOFF_MAX
        assert backoff(retries, 3600) <= settings.CELERY_RETRY_BACKOFF_MAX


def test_late_acks_prefetch_and_lost_workers_are_configured_for_redelivery():
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]


def test_every_task_acks_late_and_retries_within_the_limits():
    tasks = _tasks()
    ours = {
        n: t
        for n, t in tasks.items()
        if n.split(".", 1)[0] in {"inventory", "promotions", "rollbacks", "audit"}
    }
    assert {"promotions.tasks.promotion_pr_open_task", "inventory.tasks.poll_all_task"} <= set(ours)
    for name, task in ours.items():
        assert task.acks_late, f"{name} acknowledges early: a killed worker would lose it"
        limit = task.time_limit or app.conf.task_time_limit
        assert limit < settings.CELERY_VISIBILITY_TIMEOUT, name
        # An ETA retry sits unacknowledged in a worker until due: it must come before redelivery.
        retry_delay = task.default_retry_delay or 0
        assert retry_delay < settings.CELERY_VISIBILITY_TIMEOUT, f"{name}: default_retry_delay {retry_delay}s"
        if getattr(task, "retry_backoff", False):
            assert (getattr(task, "retry_backoff_max", 0) or 0) < limit, name


@pytest.mark.parametrize(
    "env",
    [
        {"CELERY_VISIBILITY_TIMEOUT": "200", "CELERY_TASK_TIME_LIMIT": "300"},
        {"CELERY_RETRY_BACKOFF_MAX": "400", "CELERY_TASK_TIME_LIMIT": "300"},
    ],
)
def test_settings_refuse_an_unsafe_ordering_at_start_up(env):
    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=subprocess_env(DJANGO_SETTINGS_MODULE="gitopsportal.settings", **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "ImproperlyConfigured" in proc.stderr and "CELERY_VISIBILITY_TIMEOUT" in proc.stderr
