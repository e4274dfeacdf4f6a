"""`manage.py poll --once`: apply the configuration, ingest every repository, poll every instance."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from inventory.config import load_config
from inventory.poll import inventory_poll_all


class Command(BaseCommand):
    help = "Poll every configured Argo CD instance and Git repository once, in the foreground."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="run one round and exit (required)")
        parser.add_argument("--config", default=None, help="YAML file (default: GITOPSPORTAL_CONFIG)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["once"]:
            raise CommandError("use --once (continuous polling runs in Celery beat)")
        config = load_config(options["config"])
        result = inventory_poll_all(config=config)
        out = self.stdout
        if result.config is not None:
            out.write(f"config: {len(result.config.created)} created, {len(result.config.updated)} updated")
        for ingest in result.ingests:
            state = (
                "skipped (another ingest is running)"
                if ingest.skipped
                else ("ERROR " + ingest.error if ingest.error else "ok")
            )
            out.write(
                f"repository {ingest.repository}: {ingest.commits} commits ingested, {ingest.touches} app paths, "
                f"{ingest.duration_ms} ms, {state}"
            )
        for poll in result.polls:
            state = (
                "skipped (another poll is running)"
                if poll.skipped
                else ("ERROR " + poll.error if poll.error else "ok")
            )
            out.write(
                f"argocd {poll.instance}: {poll.apps_seen} apps seen, {poll.apps_changed} changed, {poll.apps_new} new, "
                f"{poll.new_deployments} new deployments, {poll.duration_ms} ms, {state}"
            )
        errors = sum(1 for r in result.ingests if r.error) + sum(1 for p in result.polls if p.error)
        out.write(
            f"total: {sum(p.apps_seen for p in result.polls)} apps seen, "
            f"{sum(p.apps_changed + p.apps_new for p in result.polls)} changed, "
            f"{sum(p.new_deployments for p in result.polls)} new deployments, "
            f"{sum(r.commits for r in result.ingests)} commits ingested, {errors} errors"
        )
        if not result.ok:
            raise CommandError(f"{errors} source(s) failed")
