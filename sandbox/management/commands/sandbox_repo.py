"""manage.py sandbox_repo PATH --apps N --clusters M --commits K [--seed S] [--force]"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.repogen import DEFAULT_END, generate_repo, read_current_versions


class Command(BaseCommand):
    help = "Generate the demo GitOps repository (bare git repo, deterministic history)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="where to create the bare repository")
        parser.add_argument("--apps", type=int, default=8)
        parser.add_argument("--clusters", type=int, default=2, help="clusters per environment")
        parser.add_argument("--commits", type=int, default=300)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--envs", default="dev,stage,prod", help="comma-separated, lowest first")
        parser.add_argument("--end", default=DEFAULT_END, help="date of the last commit (RFC 3339)")
        parser.add_argument("--helm-apps", type=int, default=0, help="extra Helm-values apps (demo)")
        parser.add_argument("--rollout-apps", type=int, default=0, help="apps deployed as Argo Rollouts")
        parser.add_argument("--force", action="store_true", help="replace an existing non-empty PATH")

    def handle(self, *args: Any, **opts: Any) -> None:
        started = time.monotonic()
        try:
            repo = generate_repo(
                opts["path"],
                apps=opts["apps"],
                clusters=opts["clusters"],
                commits=opts["commits"],
                seed=opts["seed"],
                envs=tuple(e.strip() for e in opts["envs"].split(",") if e.strip()),
                end=opts["end"],
                force=opts["force"],
                helm_apps=opts["helm_apps"],
                rollout_apps=opts["rollout_apps"],
            )
        except (FileExistsError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        elapsed = time.monotonic() - started
        versions = read_current_versions(repo.path)
        top, mid = repo.envs[-1], repo.envs[min(1, len(repo.envs) - 1)]
        behind = sum(1 for v in versions.values() if v.get(top) != v.get(mid))
        self.stdout.write(
            f"Generated {repo.path} in {elapsed:.1f}s\n"
            f"  head      {repo.head_sha}\n"
            f"  commits   {repo.commits}\n"
            f"  apps      {len(repo.apps)} across teams {', '.join(repo.teams)}\n"
            f"  clusters  {', '.join(c.name for c in repo.clusters)}\n"
            f"  pending   {behind} apps with {top} behind {mid}"
        )
