"""Fixtures of the fuzz and bad-input tests: the sandbox of tests/sandbox_fixtures.py."""

from tests.sandbox_fixtures import *  # noqa: F403 - fixtures
