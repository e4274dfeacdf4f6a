"""Signals of the ledger for the apps above it (audit imports none of them)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent by audit.services.audit_events_record once per batch, inside its transaction, with
# ``events`` (the saved AuditEvents, in chain order). Single appends send post_save instead.
events_recorded = Signal()
