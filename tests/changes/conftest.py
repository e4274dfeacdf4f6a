"""Fixtures of the change-lifecycle tests: the rollbacks' live sandbox, and the fake forge server."""

from __future__ import annotations

from tests.integrations.integration_fakes import server
from tests.rollbacks.conftest import sandbox, sandbox_auto_merge, sandbox_dirs

__all__ = ["sandbox", "sandbox_auto_merge", "sandbox_dirs", "server"]
