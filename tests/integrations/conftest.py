"""Fixtures for the integrations tests (helpers live in integration_fakes)."""

from tests.integrations.integration_fakes import server

__all__ = ["server"]
