"""Figure 7: a sync in the Argo CD emulator → visible in GET /api/v1/deployments."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
import time

from .env import ROOT, BenchEnv, child_env
from .fleet import ARGOCD_TOKEN, Fleet
from .measure import fmt_n, fmt_p, fmt_s, stats
from .pages import bench_user
from .report import Section, verdict

_TAG = re.compile(r'newTag:\s*"?[^"\n]*"?')


def commit_tag(fleet: Fleet, app: str, env: str, tag: str) -> str:
    """Commit a new image tag for one app in one environment straight into the bare repo."""
    repo = str(fleet.bare)

    def git(*args: str, input_text: str | None = None, extra: dict[str, str] | None = None) -> str:
        return subprocess.run(
            ["git", "--git-dir", repo, *args], input=input_text, capture_output=True, text=True, check=True,
            env={"GIT_AUTHOR_NAME": "Bench CI", "GIT_AUTHOR_EMAIL": "ci@example.com", "GIT_COMMITTER_NAME":
                 "Bench CI", "GIT_COMMITTER_EMAIL": "ci@example.com", "PATH": "/usr/bin:/bin", **(extra or {})},
        ).stdout.strip()  # fmt: skip

    path = f"environments/{env}/{app}/kustomization.yaml"
    head = git("rev-parse", "refs/heads/main")
    text = git("show", f"{head}:{path}")
    new = _TAG.sub(f'newTag: "{tag}"', text, count=1) if _TAG.search(text) else text + f"\n# {tag}\n"
    blob = git("hash-object", "-w", "--stdin", input_text=new + ("" if new.endswith("\n") else "\n"))
    index = str(fleet.bare / f"bench-index-{time.monotonic_ns()}")
    git("read-tree", head, extra={"GIT_INDEX_FILE": index})
    git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", extra={"GIT_INDEX_FILE": index})
    tree = git("write-tree", extra={"GIT_INDEX_FILE": index})
    subprocess.run(["rm", "-f", index], check=False)
    sha = git("commit-tree", tree, "-p", head, input_text=f"ci: {app} {tag} in {env}\n")
    git("update-ref", "refs/heads/main", sha, head)
    return sha


class WatchProbe:
    """Follows the emulator's watch stream for one app and records when it reports a revision."""

    def __init__(self, fleet: Fleet, app: str) -> None:
        from integrations.argocd import ArgoCDClient

        self.client = ArgoCDClient(fleet.argocd.base_url, ARGOCD_TOKEN, allow_http=True)
        self.fleet, self.app = fleet, app
        self.seen: dict[str, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> WatchProbe:
        self.thread.start()
        time.sleep(0.3)  # the stream is open before the change
        return self

    def _run(self) -> None:
        try:
            for event in self.client.watch_applications(
                resource_version=str(self.fleet.argocd.rv), selector=f"app.kubernetes.io/name={self.app}"
            ):
                app = event.application
                synced = app.sync_revision and app.sync_status == "Synced" and app.history
                if synced and app.history[-1].revision == app.sync_revision:
                    self.seen.setdefault(f"{app.name}@{app.sync_revision}", time.perf_counter())
        except Exception:  # noqa: S110 - the stream ends when the emulator stops
            pass


def _synced(fleet: Fleet, argo_names: list[str], sha: str) -> bool:
    with fleet.argocd.lock:
        for name in argo_names:
            state = fleet.argocd.apps[name].to_json()["status"]
            history = state.get("history") or []
            if state["sync"].get("revision") != sha or not history or history[-1].get("revision") != sha:
                return False
    return True


def run(
    section: Section, env: BenchEnv, fleet: Fleet, *, samples: int, interval: float, timeout_factor: float = 4
) -> None:
    from django.test import Client

    client = Client()
    client.force_login(bench_user())
    rng = random.Random(7)
    dev_apps = sorted({a.name for a in fleet.repo.apps})
    log = open(env.workdir / f"poll-loop-{fleet.argo_apps}.log", "ab")  # noqa: SIM115 - closed below
    loop = subprocess.Popen(
        [sys.executable, "-m", "bench.poll_loop", str(fleet.instance_id), str(interval)],
        cwd=ROOT, env=child_env(env), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    poll_lat: list[float] = []
    watch_lat: list[float] = []
    missing = 0
    try:
        time.sleep(interval * 1.5)  # the loop has polled at least once
        for i in range(samples):
            time.sleep(rng.uniform(0, interval))  # land anywhere in the poll cycle
            app = rng.choice(dev_apps)
            names = [
                n
                for n, a in fleet.argocd.apps.items()
                if a.definition.app == app and a.definition.env == "dev"
            ]
            probe = WatchProbe(fleet, app).start()
            sha = commit_tag(fleet, app, "dev", f"7.{i}.{rng.randint(0, 999)}")
            deadline = time.monotonic() + 30
            while not _synced(fleet, names, sha):
                fleet.argocd.reconcile()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the emulator did not sync {app} to {sha[:8]}")
            synced_at = time.perf_counter()
            url = f"/api/v1/deployments?app={app}&environment=dev"
            limit = time.monotonic() + interval * timeout_factor + 30
            while True:
                rows = client.get(url).json()["deployments"]
                if rows and all(r["revision"] == sha for r in rows):
                    poll_lat.append(time.perf_counter() - synced_at)
                    break
                if time.monotonic() > limit:
                    missing += 1
                    break
                time.sleep(0.05)
            seen = [probe.seen.get(f"{n}@{sha}") for n in names]
            if all(seen):
                watch_lat.append(max(seen) - synced_at)  # type: ignore[type-var]
    finally:
        loop.stdin.close()  # type: ignore[union-attr]
        try:
            loop.wait(60)
        except subprocess.TimeoutExpired:
            loop.kill()
        log.close()
    label = f"{fmt_n(fleet.argo_apps)} apps"
    p = stats(poll_lat)
    section.row(
        f"{label}: via the poller (interval {fmt_s(interval)})",
        f"{fmt_p(p)} (max {fmt_s(p.max)}, n={p.n}" + (f", {missing} never visible" if missing else "") + ")",
        reference=f"one poll interval {fmt_s(interval)}",
        ratio=f"p95 = {p.p95 / interval:.2f} intervals",
        target="p95 < one poll interval",
        verdict=verdict(p.p95 < interval and not missing, f"p95 {p.p95:.1f} s vs {interval:.0f} s"),
    )
    w = stats(watch_lat)
    section.row(
        f"{label}: with the watch stream",
        "not measured: inventory has no watch consumer (nothing in inventory/ calls "
        "ArgoCDClient.watch_applications)",
        reference=f"the stream itself delivers the synced app {fmt_p(w)} after the sync",
        target="p95 < 2 s",
        verdict="not measured: no watch consumer in inventory",
    )
    section.note(
        f"{label}: {samples} syncs, each a commit of a new image tag for one app's dev overlay written into "
        "the bare repo, then the emulator reconciled (follows the head, auto-syncs); the clock starts when "
        "the emulator reports every dev cluster of the app synced to the new commit and stops when "
        "GET /api/v1/deployments?app=…&environment=dev (test client, 50 ms loop) shows it everywhere. The "
        f"poller is `instance_poll` every {interval:g} s in its own process (bench/poll_loop.py, a "
        "beat-like fixed schedule) instead of Celery beat + worker; syncs land at random points of the "
        "cycle. Each commit moves every app's sync revision (monorepo), so every poll after a commit "
        "re-reads all apps, as Argo CD would report."
    )
