"""`manage.py argocd_watch`: follow every Argo CD instance's application stream (long-running).

Runs beside the Celery worker and beat (exactly one replica): it applies changes within about a
second of Argo CD reporting them, while the beat-driven poll stays the safety net. Stops cleanly on
SIGTERM or SIGINT: watchers abort their streams, finish the event in hand and close their
database connections.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from inventory.config import load_config
from inventory.configapply import config_apply
from inventory.watch import BACKOFF_BASE_SECONDS, BACKOFF_MAX_SECONDS, WatchSupervisor

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Follow Argo CD's application watch stream of every instance and apply changes as they come."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--config", default=None, help="YAML file to apply first (default: GITOPSPORTAL_CONFIG)"
        )
        parser.add_argument(
            "--rescan", type=float, default=30.0, help="seconds between checks for added or removed instances"
        )
        parser.add_argument(
            "--backoff", type=float, default=BACKOFF_BASE_SECONDS, help="first retry delay (s)"
        )
        parser.add_argument(
            "--backoff-max", type=float, default=BACKOFF_MAX_SECONDS, help="longest retry delay (s)"
        )
        parser.add_argument(
            "--heartbeat-file", default="", help="touch this file while healthy (for liveness probes)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rescan"] <= 0 or options["backoff"] <= 0 or options["backoff_max"] < options["backoff"]:
            raise CommandError("--rescan and --backoff must be positive, --backoff-max at least --backoff")
        config = load_config(options["config"])
        if config is not None:
            config_apply(config=config)
        heartbeat_path = Path(options["heartbeat_file"]) if options["heartbeat_file"] else None
        supervisor = WatchSupervisor(
            rescan_seconds=options["rescan"],
            watcher_options={"backoff_base": options["backoff"], "backoff_max": options["backoff_max"]},
        )
        if heartbeat_path is not None:
            supervisor.heartbeat = lambda: _touch(heartbeat_path, supervisor)

        def on_signal(signum: int, _frame: Any) -> None:
            logger.info("argocd watch: %s received, stopping", signal.Signals(signum).name)
            supervisor.stop()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        self.stdout.write("argocd watch: following every Argo CD instance (SIGTERM stops)")
        supervisor.run()
        totals = [w.stats for w, _ in supervisor.watchers.values()]
        self.stdout.write(
            f"argocd watch: stopped after {sum(s.events for s in totals)} events, "
            f"{sum(s.deployments for s in totals)} new deployments, {sum(s.relists for s in totals)} re-lists"
        )


def _touch(path: Path, supervisor: WatchSupervisor) -> None:
    """Refresh the heartbeat while every watcher thread is alive."""
    if all(thread.is_alive() for _, thread in supervisor.watchers.values()):
        try:
            path.touch()
        except OSError as exc:
            logger.warning("argocd watch: cannot touch heartbeat %s: %s", path, exc)
