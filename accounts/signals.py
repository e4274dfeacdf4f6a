"""Record account lockouts (django-axes) in the audit ledger."""

from __future__ import annotations

from axes.signals import user_locked_out
from django.dispatch import receiver


@receiver(user_locked_out, dispatch_uid="accounts.audit_lockout")
def _on_locked_out(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    # Attempts against a locked account come from unauthenticated callers: aggregated per source
    # and minute (audit.aggregate), never one chained row per request.
    from audit.aggregate import audit_event_record_aggregated

    audit_event_record_aggregated(
        action="auth.locked_out",
        target_type="user",
        target_label=str(username or "")[:150],
        message=f"sign-in locked after repeated failures from {ip_address or 'unknown address'}",
    )
