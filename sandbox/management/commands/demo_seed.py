"""Create the demo users: one per role, password "demo"."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.roles import ALL_ROLES
from accounts.services import user_create


class Command(BaseCommand):
    help = "Seed the demo: one user per role named after the role, password 'demo' (never in production)."

    def handle(self, *args, **opts):
        if settings.PRODUCTION:
            raise CommandError("demo_seed refuses to run in production")
        user_model = get_user_model()
        for role in ALL_ROLES:
            if not user_model.objects.filter(username=role).exists():
                user_create(username=role, roles=[role], password="demo", email=f"{role}@demo.invalid")
        admin = user_model.objects.get(username="admin")
        if not admin.is_staff:
            admin.is_staff = True
            admin.is_superuser = True
            admin.save(update_fields=["is_staff", "is_superuser"])
        self.stdout.write("demo users: " + ", ".join(ALL_ROLES) + " (password: demo)")
