from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.roles import ALL_ROLES
from accounts.services import user_create


class Command(BaseCommand):
    help = "Create a local user with a role (global, or scoped to a project and environment)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--role", action="append", required=True, choices=ALL_ROLES, help="may be repeated"
        )
        parser.add_argument("--project", default="*", help="Argo CD project name or glob (default: all)")
        parser.add_argument("--environment", default="*", help="environment name (default: all)")
        parser.add_argument("--email", default="")
        parser.add_argument("--password", help="set a password (default: ask for none; use SSO or set later)")

    def handle(self, *args, **opts):
        try:
            user = user_create(
                username=opts["username"],
                roles=opts["role"],
                password=opts["password"],
                email=opts["email"],
                project=opts["project"],
                environment=opts["environment"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(
            f"user {user.get_username()}: {', '.join(opts['role'])} (project {opts['project']}, environment {opts['environment']})"
        )
