"""Record sign-ins, sign-outs and failed sign-ins in the audit ledger."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from audit.aggregate import audit_event_record_aggregated
from audit.services import audit_event_record


@receiver(user_logged_in)
def _on_login(sender, request, user, **kwargs) -> None:
    backend = getattr(user, "backend", "") or ""
    method = "oidc" if "oidc" in backend.lower() else "password"
    audit_event_record(
        action="auth.login",
        actor=user,
        target_type="user",
        target_id=user.pk,
        target_label=user.get_username(),
        message=f"signed in ({method})",
    )


@receiver(user_logged_out)
def _on_logout(sender, request, user, **kwargs) -> None:
    if user is not None:
        audit_event_record(
            action="auth.logout",
            actor=user,
            target_type="user",
            target_id=user.pk,
            target_label=user.get_username(),
        )


@receiver(user_login_failed)
def _on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    # Aggregated per client address and minute: failed sign-ins must not grow the ledger per request.

    username = str(credentials.get("username", ""))[:150]
    audit_event_record_aggregated(
        action="auth.login_failed", target_type="user", target_label=username, message="failed sign-in"
    )
