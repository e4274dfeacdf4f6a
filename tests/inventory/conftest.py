"""Inventory tests run against the real emulators (see tests/sandbox_fixtures.py)."""

from tests.sandbox_fixtures import *  # noqa: F403
