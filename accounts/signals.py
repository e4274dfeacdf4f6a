"""Write role, superuser and activation changes to the audit ledger, whatever path made them.

The portal's services (``role_grant_add``, ``oidc_roles_sync``, ``user_create``) record their own
events; these receivers catch everything else that changes who may do what: Django admin, the
shell, ``createsuperuser``, a migration or a script saving a user or a grant directly. Each receiver
runs inside the transaction of the change when there is one (admin and services are atomic), so
the change and its event commit together. Services wrap their writes in ``recorded_by_service()``
so one change is not recorded twice. Account lockouts (django-axes) are recorded here too.
"""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver

from audit.aggregate import audit_event_record_aggregated
from audit.services import audit_event_record

from .models import RoleGrant
from .recording import current_acting_user, service_is_recording
from .services import api_tokens_revoke_all

# Flags of the user row that change what someone may do: superuser and staff bypass roles,
# is_active decides whether the account (and its API tokens) works at all.
PRIVILEGE_FIELDS = ("is_superuser", "is_staff", "is_active")
ORM_MESSAGE = "changed outside the portal's services (Django admin, shell or a management command)"


def _record(*, message: str = ORM_MESSAGE, **fields: Any) -> None:
    actor = current_acting_user()
    audit_event_record(actor=actor, system_name=None if actor else "orm", message=message, **fields)


def _username(user_pk: int) -> str:
    name = get_user_model().objects.filter(pk=user_pk).values_list("username", flat=True).first()
    return name or str(user_pk)


def _grant_state(grant: RoleGrant) -> dict[str, str]:
    return {
        "role": grant.role,
        "project": grant.project,
        "environment": grant.environment,
        "source": grant.source,
    }


# --- superuser, staff, active ---------------------------------------------------------------------


@receiver(pre_save, sender=get_user_model(), dispatch_uid="accounts.user_privileges_before")
def _user_privileges_before(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    # A login saves last_login alone: no privilege can change, so no extra query.
    skip = update_fields is not None and not set(update_fields) & set(PRIVILEGE_FIELDS)
    if raw or instance.pk is None or skip:
        instance._privileges_before = None
        return
    instance._privileges_before = sender.objects.filter(pk=instance.pk).values(*PRIVILEGE_FIELDS).first()


@receiver(post_save, sender=get_user_model(), dispatch_uid="accounts.user_privileges_after")
def _user_privileges_after(sender, instance, created=False, raw=False, **kwargs) -> None:
    if raw:
        return
    after = {field: getattr(instance, field) for field in PRIVILEGE_FIELDS}
    before = getattr(instance, "_privileges_before", None)
    if created:
        # A new account: only worth an event of its own when it starts privileged.
        if not (instance.is_superuser or instance.is_staff):
            return
        before = dict.fromkeys(PRIVILEGE_FIELDS[:2], False) | {"is_active": True}
    elif before is None:
        return  # a save of other fields only (update_fields), or of a row that vanished
    changed = {field for field in PRIVILEGE_FIELDS if before[field] != after[field]}
    if not changed:
        return
    _record(
        action="user.privileges_changed",
        target_type="user",
        target_id=instance.pk,
        target_label=instance.get_username(),
        before={field: before[field] for field in sorted(changed)},
        after={field: after[field] for field in sorted(changed)},
        message="account created with privileges" if created else ORM_MESSAGE,
    )
    if "is_active" in changed and not instance.is_active:
        # A deactivated user's tokens die with the account: reactivating it does not revive them.
        api_tokens_revoke_all(user=instance, reason="user deactivated")


# --- global roles (Django groups) -----------------------------------------------------------------


def _groups_of(user_pk: int) -> set[str]:
    return set(Group.objects.filter(user__pk=user_pk).values_list("name", flat=True))


@receiver(m2m_changed, sender=get_user_model().groups.through, dispatch_uid="accounts.user_groups_changed")
def _user_groups_changed(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    if service_is_recording():
        return
    user_model = get_user_model()
    if action == "pre_clear":
        # The rows are gone by post_clear: remember them now.
        if reverse:
            instance._cleared_user_pks = list(instance.user_set.values_list("pk", flat=True))
        else:
            instance._cleared_groups = _groups_of(instance.pk)
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if reverse:  # group.user_set.add(...): instance is the group, pk_set the users
        user_pks = (
            (pk_set or set()) if action != "post_clear" else set(getattr(instance, "_cleared_user_pks", []))
        )
        pairs = [(user, {instance.name}) for user in user_model.objects.filter(pk__in=user_pks)]
    else:
        names = (
            set(model.objects.filter(pk__in=pk_set or ()).values_list("name", flat=True))
            if action != "post_clear"
            else getattr(instance, "_cleared_groups", set())
        )
        pairs = [(instance, names)]
    verb = "role.granted" if action == "post_add" else "role.revoked"
    for user, names in pairs:
        for name in sorted(names):
            _record(
                action=verb,
                target_type="user",
                target_id=user.pk,
                target_label=user.get_username(),
                after={"role": name, "project": "*", "environment": "*", "source": "local"},
            )


# --- scoped roles (RoleGrant rows) ----------------------------------------------------------------


@receiver(pre_save, sender=RoleGrant, dispatch_uid="accounts.role_grant_before")
def _role_grant_before(sender, instance, raw=False, **kwargs) -> None:
    old = None if raw or instance.pk is None else sender.objects.filter(pk=instance.pk).first()
    instance._grant_before = _grant_state(old) if old is not None else None


@receiver(post_save, sender=RoleGrant, dispatch_uid="accounts.role_grant_saved")
def _role_grant_saved(sender, instance, created=False, raw=False, **kwargs) -> None:
    if raw or service_is_recording():
        return
    before, after = getattr(instance, "_grant_before", None), _grant_state(instance)
    if not created and before == after:
        return
    _record(
        action="role.granted" if created else "role.grant_changed",
        target_type="user",
        target_id=instance.user_id,
        target_label=_username(instance.user_id),
        environment="" if instance.environment == "*" else instance.environment,
        before=None if created else before,
        after=after,
    )


@receiver(post_delete, sender=RoleGrant, dispatch_uid="accounts.role_grant_deleted")
def _role_grant_deleted(sender, instance, **kwargs) -> None:
    if service_is_recording():
        return
    _record(
        action="role.revoked",
        target_type="user",
        target_id=instance.user_id,
        target_label=_username(instance.user_id),
        environment="" if instance.environment == "*" else instance.environment,
        before=_grant_state(instance),
    )


# --- lockouts -------------------------------------------------------------------------------------


@receiver(user_locked_out, dispatch_uid="accounts.audit_lockout")
def _on_locked_out(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    # Attempts against a locked account come from unauthenticated callers: aggregated per source
    # and minute (audit.aggregate), never one chained row per request.
    audit_event_record_aggregated(
        action="auth.locked_out",
        target_type="user",
        target_label=str(username or "")[:150],
        message=f"sign-in locked after repeated failures from {ip_address or 'unknown address'}",
    )
