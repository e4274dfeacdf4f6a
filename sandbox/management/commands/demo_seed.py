"""Create the demo users: one per role, password "demo"; optionally a stale Argo CD instance."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.roles import ALL_ROLES
from accounts.services import user_create
from inventory.models import ArgoApplication, ArgoInstance, Cluster

STALE_INSTANCE = "edge"
# Nothing listens on the discard port: every poll of the instance fails at once (connection refused).
STALE_URL = "http://127.0.0.1:9"


class Command(BaseCommand):
    help = "Seed the demo: one user per role named after the role, password 'demo' (never in production)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--stale-instance",
            action="store_true",
            help=f"add an Argo CD instance {STALE_INSTANCE!r} that stopped answering, with one dev app it "
            "ran (the matrix shows that app stale)",
        )

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
        if opts["stale_instance"]:
            self.stdout.write(self._stale_instance())

    def _stale_instance(self) -> str:
        """Keep what a second Argo CD instance last reported for one dev app; the instance is gone.

        Its last successful poll is two hours old, older than the staleness threshold, and every poll
        fails: the matrix shows the app's cell on that instance's cluster as stale, with the banner.
        """
        source = (
            ArgoApplication.objects.live()
            .filter(environment__name="dev", application__isnull=False)
            .exclude(instance__name=STALE_INSTANCE)
            .select_related("application", "environment")
            .order_by("-application__name", "name")
            .first()
        )
        if source is None or source.application is None:
            return "stale instance skipped: no dev app polled yet"
        before = timezone.now() - timedelta(hours=2)
        instance, _ = ArgoInstance.objects.get_or_create(
            name=STALE_INSTANCE,
            defaults={
                "url": STALE_URL,
                "allow_http": True,
                "last_success_at": before,
                "last_poll_finished_at": before,
                "apps_seen": 1,
            },
        )
        cluster_name = "dev-edge-1"
        cluster, _ = Cluster.objects.get_or_create(
            instance=instance,
            server=f"https://{cluster_name}.k8s.example",
            defaults={
                "name": cluster_name,
                "environment": source.environment,
                "labels": {"env": "dev", "region": "edge-1", "tier": "edge"},
            },
        )
        name = f"{source.application.name}-{cluster_name}"
        fields = (
            "application", "claimed_app", "environment", "project", "namespace", "app_namespace", "labels",
            "repo_url", "path", "target_revision", "sources", "automated", "sync_status", "health_status",
            "revision", "revisions", "deployed_revision", "images", "version",
        )  # fmt: skip
        ArgoApplication.objects.get_or_create(
            instance=instance,
            name=name,
            defaults={
                **{f: getattr(source, f) for f in fields},
                "cluster": cluster,
                "deployed_at": before,
                "reconciled_at": before,
                "first_seen_at": before,
                "last_changed_at": before,
            },
        )
        return f"stale: {name} on Argo CD instance {STALE_INSTANCE!r} ({STALE_URL}, not answering)"
