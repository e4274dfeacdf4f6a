"""manage.py sandbox_argocd --port P --repo PATH --repo-url URL: run the emulated Argo CD until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.argocd import ArgoCDEmulator
from sandbox.argocd.emulator import DEFAULT_SYNC_WINDOWS
from sandbox.argocd.windows import validate_window

ENVS = ("dev", "stage", "prod")


class Command(BaseCommand):
    help = "Run the emulated Argo CD API server in the foreground (dev/test only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8081)
        parser.add_argument("--repo", required=True, help="path of the bare GitOps repository")
        parser.add_argument("--repo-url", required=True, help="repoURL shown in Application specs")
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default="sandbox")
        parser.add_argument("--token", default="sandbox-argocd-token", help="static API token")
        parser.add_argument("--branch", default="main")
        parser.add_argument("--reconcile-interval", type=float, default=1.0)
        parser.add_argument("--sync-delay", type=float, default=0.0, help="seconds an operation runs")
        parser.add_argument("--health-delay", type=float, default=0.0, help="seconds spent Progressing")
        parser.add_argument("--manual-sync-envs", default="", help="comma-separated envs without auto-sync")
        parser.add_argument("--multi-source-apps", default="", help="comma-separated globs of app names")
        parser.add_argument("--state-file", default=None, help="keep history across restarts")
        parser.add_argument(
            "--sync-window",
            action="append",
            default=[],
            metavar="PROJECT:SCHEDULE:DURATION",
            help="add a deny window on the prod clusters of PROJECT, '*' for every project "
            "(e.g. 'payments:*/15 * * * *:3m'); SCHEDULE 'now' = a window that opened this minute",
        )
        parser.add_argument(
            "--progressive-sync-apps", default="", help="comma-separated app globs rolled out by RollingSync"
        )
        parser.add_argument(
            "--rollout-time-scale", type=float, default=1.0, help="factor on canary step and pause durations"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        manual = {e.strip() for e in opts["manual_sync_envs"].split(",") if e.strip()}
        emulator = ArgoCDEmulator(
            opts["repo"],
            opts["repo_url"],
            host=opts["host"],
            port=opts["port"],
            username=opts["username"],
            password=opts["password"],
            token=opts["token"],
            branch=opts["branch"],
            reconcile_interval=opts["reconcile_interval"],
            sync_delay=opts["sync_delay"],
            health_delay=opts["health_delay"],
            auto_sync_envs=tuple(e for e in ENVS if e not in manual),
            multi_source_apps=tuple(g.strip() for g in opts["multi_source_apps"].split(",") if g.strip()),
            state_file=opts["state_file"],
            sync_windows=_sync_windows(opts["sync_window"]),
            rollout_time_scale=opts["rollout_time_scale"],
            progressive_sync_apps=tuple(
                g.strip() for g in opts["progressive_sync_apps"].split(",") if g.strip()
            ),
        )
        url = emulator.start()
        self.stdout.write(
            f"Argo CD emulator on {url} ({len(emulator.apps)} applications, head {emulator.head[:12]}); "
            f"token {opts['token']!r}. Ctrl-C to stop."
        )
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # SIGINT too: background shells ignore it by default
            signal.signal(sig, lambda *_: done.set())
        try:
            while not done.wait(1.0):  # short waits keep Ctrl-C responsive
                pass
        except KeyboardInterrupt:
            pass
        finally:
            emulator.stop()
            self.stdout.write("Argo CD emulator stopped.")


def _sync_windows(specs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The default windows plus a deny window on ``prod-*`` per ``PROJECT:SCHEDULE:DURATION``."""
    windows = {project: list(items) for project, items in DEFAULT_SYNC_WINDOWS.items()}
    for spec in specs:
        project, schedule, duration = (part.strip() for part in spec.split(":", 2))
        if schedule == "now":  # closed from start-up for DURATION, then open (the demo's "opens at …")
            now = datetime.now(UTC)
            schedule = f"{now.minute} {now.hour} {now.day} {now.month} *"
        window = {
            "kind": "deny",
            "schedule": schedule,
            "duration": duration,
            "clusters": ["prod-*"],
            "manualSync": False,
            "timeZone": "UTC",
            "description": "Recurring prod change freeze (sandbox)",
        }
        try:
            validate_window(window)
        except (ValueError, KeyError) as exc:
            raise CommandError(f"--sync-window {spec!r}: {exc}") from exc
        windows.setdefault(project, []).append(window)
    return windows
