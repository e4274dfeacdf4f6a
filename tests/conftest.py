"""Test harness: the real PostgreSQL and Redis, and a real Celery worker when a test asks for one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gitopsportal")
os.environ.setdefault("AXES_ENABLED", "false")


def _patch_flush_for_append_only_audit() -> None:
    """Let test teardown TRUNCATE the audit table: production keeps the trigger that refuses it."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        statements = original(
            self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )
        # The ledger and its checkpoints are append-only (audit.dbroles): lift the triggers for the flush.
        ledger = [t for t in ("audit_auditevent", "audit_auditcheckpoint") if t in tables]
        if ledger and statements:
            statements = [
                *(f"ALTER TABLE {t} DISABLE TRIGGER USER;" for t in ledger),
                *statements,
                *(f"ALTER TABLE {t} ENABLE TRIGGER USER;" for t in ledger),
            ]
        return statements

    DatabaseOperations.sql_flush = sql_flush


_patch_flush_for_append_only_audit()


def database_url_for_subprocess() -> str:
    """Return a DATABASE_URL that points a child process at this test session's database."""
    from django.db import connection

    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    from django.conf import settings

    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_subprocess()
    # The child uses exactly this process's broker; it must not apply the xdist offset again.
    env.pop("PYTEST_XDIST_WORKER", None)
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class WorkerProcess:
    """A real `celery worker` subprocess on Redis, against the test database."""

    def __init__(
        self, log_path: Path, *, pool: str = "threads", concurrency: int = 4, extra_env: dict | None = None
    ):
        self.log_path = log_path
        self.pool = pool
        self.concurrency = concurrency
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        from gitopsportal.celery import ALL_QUEUES

        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        hostname = f"test-{os.getpid()}-{time.monotonic_ns()}@%h"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "gitopsportal",
                "worker",
                "-Q",
                ALL_QUEUES,
                "--pool",
                self.pool,
                "--concurrency",
                str(self.concurrency),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                hostname,
                "-l",
                "info",
            ],
            cwd=ROOT,
            env=subprocess_env(**self.extra_env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited: {self.log_path.read_text()[-2000:]}")
            if b"ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError("celery worker did not become ready in time")

    def kill(self) -> None:
        """SIGKILL the worker and its children, like the OOM killer would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()


@pytest.fixture
def purge_broker():
    """Start from an empty broker so messages of earlier tests never leak in."""
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    yield


@pytest.fixture
def celery_worker_process(transactional_db, purge_broker, tmp_path):
    """Run a real Celery worker for one test (use with committed data: transactional_db)."""
    worker = WorkerProcess(tmp_path / "worker.log").start()
    yield worker
    worker.stop()


def wait_for(predicate, *, timeout: float = 20, interval: float = 0.1, message: str = "condition"):
    """Poll until predicate() is truthy; return its value or fail the test with ``message``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {message}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Make ``--dist loadgroup`` honour ``xdist_group`` under pytest 9.

    pytest-xdist 3.8 tags a grouped test by assigning ``item._nodeid``, which pytest 9 no longer
    reads (node ids live in ``item._id``), so every group was silently spread over the workers.
    Redo the tagging the way pytest 9 stores ids; a no-op once xdist does it itself.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        names = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        if names and "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")


@pytest.fixture(autouse=True)
def _fresh_audit_aggregation():
    """Start every test with no aggregation counters (audit.aggregate): they live in Redis, which a
    rolled-back test database does not roll back."""
    from django.conf import settings
    from django.core.cache import cache

    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(client.scan_iter(match="*audit:agg:*", count=1000))
        keys += list(client.scan_iter(match="*forge-webhook-delivery:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    else:
        cache.clear()
    yield
