from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.services import api_token_create


class Command(BaseCommand):
    help = "Print a new API token for USER (use it as `Authorization: Bearer <token>`)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")
        parser.add_argument(
            "--expires-in-days", type=int, default=None, help="default and maximum: API_TOKEN_MAX_AGE_DAYS"
        )

    def handle(self, *args, **opts):
        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"no user {opts['username']!r}")
        try:
            _, raw = api_token_create(user=user, name=opts["name"], expires_in_days=opts["expires_in_days"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        # The token goes to stdout alone so scripts can capture it.
        self.stdout.write(raw)
