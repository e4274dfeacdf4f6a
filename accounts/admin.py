"""Django admin for users: a user the audit ledger names is deactivated, never deleted."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count

from audit.models import AuditEvent

User = get_user_model()


class PortalUserAdmin(UserAdmin):
    def get_deleted_objects(self, objs, request):
        """Refuse, with one line per user, deleting users the ledger names (their id is in its hashes).

        The ledger's foreign key is PROTECT too; this only replaces the list of every protected event
        (thousands for an active user) with a message that says what to do instead.
        """
        users = list(objs)
        named = dict(
            AuditEvent.objects.filter(actor_id__in=[u.pk for u in users])
            .values("actor_id")
            .annotate(events=Count("id"))
            .values_list("actor_id", "events")
        )
        if not named:
            return super().get_deleted_objects(users, request)
        protected = [
            f"{user.get_username()}: named by {named[user.pk]} audit events, whose hashes hold the user's id. "
            "Deactivate the user instead (untick “Active”)."
            for user in users
            if user.pk in named
        ]
        return [], {}, set(), protected


admin.site.unregister(User)
admin.site.register(User, PortalUserAdmin)
