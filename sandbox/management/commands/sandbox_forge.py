"""Run the GitHub-compatible forge emulator in the foreground until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.forge import ForgeEmulator
from sandbox.forge.server import DEFAULT_TOKEN


def _parse_users(values: list[str]) -> dict[str, str]:
    """`--user alice:tok1 --user bob:tok2` → {"tok1": "alice", "tok2": "bob"}."""
    users = {}
    for value in values:
        login, sep, token = value.partition(":")
        if not sep or not login or not token:
            raise CommandError(f"--user expects login:token, got {value!r}")
        users[token] = login
    return users


class Command(BaseCommand):
    help = "Serve a GitHub-compatible REST API and smart-HTTP git over bare repos in DIR/<owner>/<repo>.git."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repos", required=True, help="directory holding <owner>/<repo>.git bare repos")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--token", default=DEFAULT_TOKEN, help="token of the portal-bot user")
        parser.add_argument("--user", action="append", default=[], metavar="LOGIN:TOKEN", help="extra user")
        parser.add_argument("--webhook-url", default=None)
        parser.add_argument("--webhook-secret", default=None)
        parser.add_argument("--state-file", default=None, help="JSON file keeping pulls across restarts")
        parser.add_argument("--public-url", default=None, help="base URL to advertise (behind a proxy)")
        parser.add_argument(
            "--ci",
            default=None,
            metavar="CONTEXT",
            help="simulated CI: report CONTEXT (e.g. ci/validate) on every pull request head",
        )
        parser.add_argument(
            "--ci-delay", type=float, default=2.0, help="seconds before CI reports its verdict"
        )
        parser.add_argument(
            "--ci-fail-marker", default="[fail-ci]", help="CI fails heads whose commit message contains this"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        emulator = ForgeEmulator(
            options["repos"],
            host=options["host"],
            port=options["port"],
            token=options["token"],
            users=_parse_users(options["user"]),
            webhook_url=options["webhook_url"],
            webhook_secret=options["webhook_secret"],
            state_file=options["state_file"],
            public_url=options["public_url"],
            ci=(
                {
                    "enabled": True,
                    "context": options["ci"],
                    "delay": options["ci_delay"],
                    "fail_marker": options["ci_fail_marker"],
                }
                if options["ci"]
                else None
            ),
        )
        stop = threading.Event()
        # SIGTERM (docker stop, process managers) should shut down as cleanly as Ctrl-C does.
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        base_url = emulator.start()
        self.stdout.write(f"Forge emulator at {base_url} (repos: {options['repos']}); Ctrl-C to stop.")
        try:
            while not stop.wait(0.5):  # the server runs on its own thread; park this one
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stdout.write("Stopping forge emulator.")
            emulator.stop()
