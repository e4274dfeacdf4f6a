"""Rollback requests: Git-revert pull requests for on-call engineers."""
