"""The portal under a bounded load while polling runs: no errors, latencies recorded.

LOAD_USERS / LOAD_SECONDS size it (default 50 users for 20 s inside `make test`; the full
60 s run is `python -m tests.load`). The report lands in test-artifacts/load/.
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.harness import ARTIFACTS, LiveStack
from tests.load.loadgen import run_load, write_report

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]


def test_matrix_and_audit_pages_serve_concurrent_users_without_errors(stack: LiveStack):
    users = int(os.environ.get("LOAD_USERS", "50"))
    seconds = float(os.environ.get("LOAD_SECONDS", "20"))
    result = run_load(stack.start_gunicorn(), users=users, seconds=seconds)
    report = write_report(result, ARTIFACTS / "load")
    assert not result.errors, f"{len(result.errors)} failed requests, see {report}: {result.errors[:5]}"
    assert result.requests >= users, "fewer requests than users: the pages hardly answered"
    assert all(result.latencies[page] for page in ("matrix", "audit trail")), report.read_text()
    stack.check_children()
