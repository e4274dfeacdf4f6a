"""Fixtures for the integrations tests.

The helpers live in `integration_fakes` (a name no other test directory uses, unlike `conftest`);
this directory is put on sys.path so that conftest and the test modules import the same module.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from integration_fakes import server

__all__ = ["server"]
