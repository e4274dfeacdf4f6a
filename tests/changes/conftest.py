"""Fixtures of the change-lifecycle tests: the rollbacks' live sandbox (forge, Argo CD, inventory)."""

from __future__ import annotations

from tests.rollbacks.conftest import sandbox, sandbox_auto_merge, sandbox_dirs

__all__ = ["sandbox", "sandbox_auto_merge", "sandbox_dirs"]
