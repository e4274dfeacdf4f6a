"""Promotion and rollback requests, gates, approvals and the pull-request lifecycle."""
