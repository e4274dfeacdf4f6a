"""GitHub-compatible forge emulator for the sandbox (REST subset, smart-HTTP git, webhooks, faults)."""

from .server import ForgeEmulator
from .webhooks import signature

__all__ = ["ForgeEmulator", "signature"]
