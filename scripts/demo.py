#!/usr/bin/env python
"""`make demo`: the portal on the sandbox with nothing but Python and git installed.

Migrates (SQLite under var/ unless DATABASE_URL is set), writes the demo GitOps repository, starts the
emulated forge and Argo CD, seeds one user per role, polls once, then runs the web server, a real
Celery worker and beat (embedded broker unless REDIS_URL is set). Ctrl-C stops everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PORT = int(os.environ.get("PORT", "8000"))
ARGOCD_PORT = int(os.environ.get("SANDBOX_ARGOCD_PORT", "8081"))
FORGE_PORT = int(os.environ.get("SANDBOX_FORGE_PORT", "8082"))
VAR = Path(os.environ.get("GITOPSPORTAL_VAR_DIR", ROOT / "var"))
SANDBOX_DIR = VAR / "sandbox"
REPOS_DIR = SANDBOX_DIR / "repos"
REPO_PATH = REPOS_DIR / "acme" / "gitops.git"
WEBHOOK_SECRET = "sandbox-webhook-secret"

ENV = dict(os.environ)
ENV.setdefault("DEBUG", "true")
ENV.setdefault("GITOPSPORTAL_CONFIG", str(ROOT / "config" / "sandbox.yaml"))
ENV.setdefault("PORTAL_BASE_URL", f"http://127.0.0.1:{PORT}")
ENV.setdefault("SANDBOX_ARGOCD_URL", f"http://127.0.0.1:{ARGOCD_PORT}")
ENV.setdefault("SANDBOX_FORGE_URL", f"http://127.0.0.1:{FORGE_PORT}")
ENV.setdefault("FORGE_WEBHOOK_SECRET", WEBHOOK_SECRET)
ENV.setdefault("POLL_INTERVAL_SECONDS", "10")
ENV.setdefault("GIT_FETCH_INTERVAL_SECONDS", "15")
# Prod without Argo CD auto-sync: the portal syncs merged changes (config/sandbox.yaml `sync`).
ENV.setdefault("SANDBOX_PROD_SYNC", "portal")
# Prod's change freeze at start-up: closed for this long, then open (the demo shows "opens at …").
DEMO_FREEZE = os.environ.get("SANDBOX_PROD_FREEZE", "10m")
ENV["PYTHONUNBUFFERED"] = "1"

children: list[tuple[str, subprocess.Popen]] = []


def manage(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=ENV, check=check)


def start(name: str, *args: str) -> None:
    log = open(VAR / f"demo-{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
    proc = subprocess.Popen(
        args, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    children.append((name, proc))


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
                return
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s; see {VAR}/demo-*.log")


def _argocd(method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{ARGOCD_PORT}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": "Bearer sandbox-argocd-token", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
        return json.loads(response.read() or b"{}")


def seed_demo_states() -> None:
    """Make the states a viewer should recognise visible: one Degraded app, one OutOfSync app.

    Degraded: Argo CD's fault lever marks the image tag one prod app runs as failing. OutOfSync:
    a direct push to another app's prod overlay whose sync Argo CD's fault lever makes fail, so it
    stays OutOfSync. Both are undone with POST /sandbox/reset-faults (the push then syncs).
    """
    apps = [
        a for a in _argocd("GET", "/api/v1/applications").get("items", []) if "-prod" in a["metadata"]["name"]
    ]
    tagged = [
        (a["metadata"]["name"], image.rsplit(":", 1)[1])
        for a in apps
        for image in (a.get("status", {}).get("summary", {}).get("images") or [])[:1]
        if ":" in image
    ]
    if not tagged:
        print("   (no prod app with an image tag: demo states skipped)")
        return
    degraded_app, tag = tagged[0]
    others = [name for name, t in tagged if t != tag]
    target = others[-1] if others else ""
    _argocd("POST", "/sandbox/faults", {"degraded_tags": [tag], "fail_sync_apps": [target] if target else []})
    print(f"   Degraded: prod apps running {tag} (e.g. {degraded_app}); undo: POST /sandbox/reset-faults")
    if not target:
        return
    app = next(a for a in apps if a["metadata"]["name"] == target)
    path = app["spec"]["source"]["path"]
    work = VAR / "demo-outofsync"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    subprocess.run(["git", "clone", "-q", str(REPO_PATH), str(work)], check=True)
    kustomization = work / path / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "# hotfix applied by hand (demo: out of band)\n")
    git = ["git", "-C", str(work), "-c", "user.name=demo", "-c", "user.email=demo@demo.invalid"]
    subprocess.run(
        [*git, "commit", "-qm", f"Hotfix {target} by hand (demo: OutOfSync)", "--", path], check=True
    )
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], check=True)
    print(f"   OutOfSync: {target} (a direct push to {path} whose sync fails)")


def stop_all(*_: object) -> None:
    for _name, proc in reversed(children):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for _name, proc in children:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    sys.exit(0)


def main() -> None:
    VAR.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    print("== migrating the database")
    manage("migrate", "--noinput", "-v0")
    if not REPO_PATH.exists():
        print(
            "== writing the demo GitOps repository (8 apps + 2 Helm-values apps, 2 of them Argo Rollouts,"
            " 3 environments, 2 clusters each)"
        )
        manage(
            "sandbox_repo",
            str(REPO_PATH),
            "--apps",
            "8",
            "--clusters",
            "2",
            "--commits",
            "300",
            "--seed",
            "7",
            # Multi-source Argo CD apps (a chart + its values in this repository): the portal promotes
            # them by copying image.tag between the environments' values.yaml (docs/argocd.md).
            "--helm-apps",
            "2",
            "--rollout-apps",
            "2",
        )
    print("== starting the sandbox forge and Argo CD")
    start(
        "forge",
        PY,
        "manage.py",
        "sandbox_forge",
        "--port",
        str(FORGE_PORT),
        "--repos",
        str(REPOS_DIR),
        "--webhook-url",
        f"http://127.0.0.1:{PORT}/webhooks/forge/gitops/",
        "--webhook-secret",
        WEBHOOK_SECRET,
        "--state-file",
        str(SANDBOX_DIR / "forge-state.json"),
        # Simulated CI on every pull request head: a commit message with [fail-ci] fails it.
        "--ci",
        "ci/validate",
        "--ci-delay",
        "3",
    )
    start(
        "argocd",
        PY,
        "manage.py",
        "sandbox_argocd",
        "--port",
        str(ARGOCD_PORT),
        "--repo",
        str(REPO_PATH),
        "--repo-url",
        f"http://127.0.0.1:{FORGE_PORT}/acme/gitops.git",
        "--reconcile-interval",
        "2",
        # Prod syncs only when the portal asks (sync: portal), and its clusters are frozen by a deny
        # window from start-up for DEMO_FREEZE: a promotion merged meanwhile shows "waiting for
        # window, opens at …" and syncs once it opens. One app rolls out by RollingSync.
        *(("--manual-sync-envs", "prod") if ENV["SANDBOX_PROD_SYNC"] == "portal" else ()),
        *(("--sync-window", f"*:now:{DEMO_FREEZE}") if ENV["SANDBOX_PROD_SYNC"] == "portal" else ()),
        "--progressive-sync-apps",
        "feature-flags",
    )
    wait_http(f"http://127.0.0.1:{ARGOCD_PORT}/api/version")
    wait_http(f"http://127.0.0.1:{FORGE_PORT}/sandbox/state")
    print("== seeding demo users and polling once")
    manage("demo_seed")
    print("== seeding demo states (Degraded, OutOfSync, stale)")
    try:
        seed_demo_states()
    except Exception as exc:  # the demo still runs without them
        print(f"   demo states skipped: {exc}")
    manage("poll", "--once", check=False)
    # Stale: a second Argo CD instance that stopped answering keeps one dev app's last known state.
    manage("demo_seed", "--stale-instance", check=False)
    start("watch", PY, "manage.py", "argocd_watch")
    print("== starting the portal, a Celery worker and beat")
    start(
        "worker",
        PY,
        "-m",
        "celery",
        "-A",
        "gitopsportal",
        "worker",
        "-Q",
        "default,poll,ingest,promote,audit",
        "--concurrency",
        "2",
        "-l",
        "info",
    )
    start(
        "beat",
        PY,
        "-m",
        "celery",
        "-A",
        "gitopsportal",
        "beat",
        "-l",
        "info",
        "--schedule",
        str(VAR / "celerybeat-schedule"),
    )
    start("web", PY, "manage.py", "runserver", f"127.0.0.1:{PORT}", "--noreload")
    wait_http(f"http://127.0.0.1:{PORT}/healthz")
    print(
        f"""
GitOps Portal is running.

  Portal        http://127.0.0.1:{PORT}/
  Argo CD (emulated)  http://127.0.0.1:{ARGOCD_PORT}/api/v1/applications   user admin / sandbox, token sandbox-argocd-token
  Forge (GitHub API)  http://127.0.0.1:{FORGE_PORT}/repos/acme/gitops/pulls   token sandbox-forge-token
  Git                 git clone http://127.0.0.1:{FORGE_PORT}/acme/gitops.git

  Logins (password "demo"): release_manager, approver, oncall, auditor, viewer, admin

  Sandbox levers (docs/sandbox.md): CI fails a head whose commit message contains [fail-ci];
  prod syncs through the portal, frozen for {DEMO_FREEZE} from start-up (then open);
  close a sync window now:  curl -X POST http://127.0.0.1:{ARGOCD_PORT}/sandbox/sync-windows -d '{{"project":"payments","closed_for":120}}'
  abort a canary:      curl -X POST http://127.0.0.1:{ARGOCD_PORT}/sandbox/rollouts/<application>/abort

Logs: {VAR}/demo-*.log. Ctrl-C stops everything.""",
        flush=True,
    )
    while True:
        for name, proc in children:
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; see {VAR}/demo-{name}.log", file=sys.stderr)
                stop_all()
        time.sleep(1)


if __name__ == "__main__":
    main()
