"""The live stack: the whole portal running as its users meet it, for browser journeys and faults.

What runs (all on loopback, free ports):
- the demo GitOps repo (``sandbox.repogen``) at ``<workdir>/repos/acme/gitops.git``;
- the sandbox forge and Argo CD emulators, in this process (tests steer them directly);
- the portal over real HTTP (``manage.py runserver --noreload``), a real Celery worker and beat, as
  child processes configured by ``config/sandbox.yaml`` through the SANDBOX_* variables.

Isolation: the children use their own PostgreSQL database (a copy of this session's migrated test
database, ``<test db>_live``) and their own Redis database index. Other tests running on the same
xdist worker flush the test database and FLUSHDB their Redis index between tests; the live stack's
beat and worker keep writing while those tests run, so sharing either would corrupt both sides.
The test process reads the live database through the extra connection alias ``live``
(``with stack.orm(): Promotion.objects.using("live")...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SANDBOX_CONFIG = ROOT / "config" / "sandbox.yaml"
ARGOCD_TOKEN = "sandbox-argocd-token"
FORGE_TOKEN = "sandbox-forge-token"
WEBHOOK_SECRET = "e2e-webhook-secret"
LIVE_ALIAS = "live"
DEMO_PASSWORD = "demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2, message: str) -> Any:
    """Poll until ``predicate()`` is truthy and return its value; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


def http_json(
    method: str, url: str, body: Any = None, *, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, Any]:
    """Send one JSON request and return (status, decoded body or text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class Child:
    """One child process with its log file; stopped with its whole process group."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    log_file: Any = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


def live_redis_url(redis_url: str, *, offset: int = 8) -> str:
    """A Redis database index of its own for the live stack (E2E_REDIS_URL overrides the first's;
    a second stack takes the index after it)."""
    override = os.environ.get("E2E_REDIS_URL")
    if override:
        redis_url, offset = override, offset - 8
        if offset == 0:
            return override
    base, _, index = redis_url.rpartition("/")
    if not index.isdigit():
        return redis_url
    return f"{base}/{(int(index) + offset) % 16}"


def _pg_url(settings_dict: dict[str, Any], name: str) -> str:
    auth = settings_dict["USER"] + (f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else "")
    host = settings_dict["HOST"] or "127.0.0.1"
    return f"postgres://{auth}@{host}:{settings_dict['PORT'] or 5432}/{name}"


def _admin_connect(settings_dict: dict[str, Any]):
    import psycopg

    return psycopg.connect(
        dbname="postgres",
        user=settings_dict["USER"] or None,
        password=settings_dict["PASSWORD"] or None,
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
        autocommit=True,
    )


@dataclass
class LiveStack:
    """The running stack and the helpers tests use to drive and observe it."""

    workdir: Path
    base_url: str = ""
    forge: Any = None
    argocd: Any = None
    repo: Any = None
    env: dict[str, str] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    db_name: str = ""
    db_url: str = ""
    redis_url: str = ""
    gunicorn_url: str = ""
    # A second stack (e.g. prod without auto-sync) has its own name: database, Redis index, ORM alias.
    name: str = LIVE_ALIAS
    prod_sync: str = "argocd"  # config/sandbox.yaml `sync` of prod (SANDBOX_PROD_SYNC)
    _admin_settings: dict[str, Any] = field(default_factory=dict)
    _blocker: Any = None

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        blocker: Any = None,
        apps: int = 8,
        clusters: int = 2,
        commits: int = 200,
        seed: int = 7,
        poll_interval: int = 2,
        name: str = LIVE_ALIAS,
        prod_sync: str = "argocd",
        helm_apps: int = 0,
        rollout_apps: int = 0,
    ) -> LiveStack:
        """Start everything; on any failure stop what was started and re-raise.

        `prod_sync="portal"`: prod's Argo CD apps do not auto-sync and the portal syncs them.
        `helm_apps`: add Helm-values apps (multi-source Argo CD apps, `sandbox_repo --helm-apps`).
        `rollout_apps`: the last apps are Argo Rollouts canaries (the demo's steps).
        """
        stack = cls(workdir=workdir, _blocker=blocker, name=name, prod_sync=prod_sync)
        try:
            stack._start(
                apps=apps,
                clusters=clusters,
                commits=commits,
                seed=seed,
                poll_interval=poll_interval,
                helm_apps=helm_apps,
                rollout_apps=rollout_apps,
            )
        except BaseException:
            stack.save_logs("startup-failure")
            stack.stop()
            raise
        return stack

    def _start(
        self,
        *,
        apps: int,
        clusters: int,
        commits: int,
        seed: int,
        poll_interval: int,
        helm_apps: int = 0,
        rollout_apps: int = 0,
    ) -> None:
        from sandbox.argocd import ArgoCDEmulator
        from sandbox.forge import ForgeEmulator
        from sandbox.repogen import generate_repo

        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        portal_port = free_port()
        self.base_url = f"http://127.0.0.1:{portal_port}"

        repos_dir = self.workdir / "repos"
        self.repo = generate_repo(
            repos_dir / "acme" / "gitops.git",
            apps=apps,
            clusters=clusters,
            commits=commits,
            seed=seed,
            helm_apps=helm_apps,
            rollout_apps=rollout_apps,
        )
        self.forge = ForgeEmulator(
            repos_dir,
            token=FORGE_TOKEN,
            webhook_url=f"{self.base_url}/webhooks/forge/gitops/",
            webhook_secret=WEBHOOK_SECRET,
        )
        self.forge.start()
        self.argocd = ArgoCDEmulator(
            repo_path=self.repo.path,
            repo_url=f"{self.forge.base_url}/acme/gitops.git",
            token=ARGOCD_TOKEN,
            reconcile_interval=0.5,
            sync_windows={},  # no change freeze whatever the date
            **({"auto_sync_envs": ("dev", "stage")} if self.prod_sync == "portal" else {}),
        )
        self.argocd.start()

        self._create_database()
        self.env = self._child_env(portal_port, poll_interval)
        self._flush_redis()
        self.manage("demo_seed")
        self.manage("poll", "--once")
        self.children["worker"] = self._spawn(
            "worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "gitopsportal",
                "worker",
                "-Q",
                "default,poll,ingest,promote,audit",
                "--pool",
                "threads",
                "--concurrency",
                "4",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"e2e-{os.getpid()}@%h",
                "-l",
                "info",
            ],
        )
        self.children["beat"] = self._spawn(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "gitopsportal",
                "beat",
                "-l",
                "info",
                "--schedule",
                str(self.workdir / "celerybeat-schedule"),
            ],
        )
        self.children["web"] = self._spawn(
            "web", [sys.executable, "manage.py", "runserver", f"127.0.0.1:{portal_port}", "--noreload"]
        )
        wait_until(self._worker_ready, timeout=60, message="the Celery worker to be ready")
        wait_until(self._portal_up, timeout=60, message=f"the portal at {self.base_url}/healthz")

    def _child_env(self, portal_port: int, poll_interval: int) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("DJANGO_ALLOW_ASYNC_UNSAFE", "PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST"):
            env.pop(key, None)
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "DJANGO_SETTINGS_MODULE": "gitopsportal.settings",
                "DATABASE_URL": self.db_url,
                "REDIS_URL": self.redis_url,
                "DEBUG": "true",
                "AXES_ENABLED": "false",
                "GITOPSPORTAL_CONFIG": str(SANDBOX_CONFIG),
                "SANDBOX_ARGOCD_PORT": str(self.argocd.port),
                "SANDBOX_FORGE_PORT": str(self.forge.port),
                "SANDBOX_ARGOCD_TOKEN": ARGOCD_TOKEN,
                "SANDBOX_FORGE_TOKEN": FORGE_TOKEN,
                "SANDBOX_PROD_SYNC": self.prod_sync,
                "SANDBOX_ARGOCD_URL": self.argocd.base_url,
                "SANDBOX_FORGE_URL": self.forge.base_url,
                "FORGE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "PORTAL_BASE_URL": self.base_url,
                "POLL_INTERVAL_SECONDS": str(poll_interval),
                "GIT_FETCH_INTERVAL_SECONDS": str(poll_interval),
                "SWEEP_INTERVAL_SECONDS": str(max(poll_interval, 3)),
                "GITOPSPORTAL_MIRRORS_DIR": str(self.workdir / "mirrors"),
                "GITOPSPORTAL_WORKSPACES_DIR": str(self.workdir / "workspaces"),
            }
        )
        return env

    def _create_database(self) -> None:
        """Create and migrate the live stack's own database (``<db>_live_<xdist worker>``)."""
        from django.db import connections

        default = dict(connections["default"].settings_dict)
        self._admin_settings = default
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.db_name = f"{default['NAME']}_{self.name}_{worker}"[-63:]
        self.db_url = _pg_url(default, self.db_name)
        from django.conf import settings

        # settings.REDIS_URL already carries this xdist worker's offset; the stack takes another index.
        self.redis_url = live_redis_url(
            settings.REDIS_URL or "redis://127.0.0.1:6379/9", offset=8 if self.name == LIVE_ALIAS else 9
        )
        with _admin_connect(default) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        env = dict(os.environ, DATABASE_URL=self.db_url)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
        )
        # The test process reads the live database through its own alias.
        connections.settings[self.name] = dict(default, NAME=self.db_name, TEST={"NAME": self.db_name})

    def _flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()

    def _spawn(self, name: str, args: list[str]) -> Child:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in Child.stop()
        proc = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        return Child(name, proc, log_path, log_file)

    def _worker_ready(self) -> bool:
        child = self.children["worker"]
        if not child.alive():
            raise RuntimeError(f"celery worker exited:\n{child.log_tail()}")
        return b"ready." in child.log_path.read_bytes()

    def _portal_up(self) -> bool:
        child = self.children["web"]
        if not child.alive():
            raise RuntimeError(f"portal exited:\n{child.log_tail()}")
        try:
            status, _ = http_json("GET", f"{self.base_url}/healthz", timeout=2)
        except OSError:
            return False
        return status == 200

    def start_gunicorn(self, *, workers: int = 2, threads: int = 8) -> str:
        """Serve the portal a second time with gunicorn (gthread) and return its base URL.

        runserver opens one database connection per request thread, so fifty concurrent users
        would exhaust the shared PostgreSQL; gunicorn's fixed pool bounds them (workers x threads),
        as in production. It serves no static files: for load on pages, not for browsers.
        """
        child = self.children.get("gunicorn")
        if child is not None and child.alive():
            return self.gunicorn_url
        port = free_port()
        self.gunicorn_url = f"http://127.0.0.1:{port}"
        self.children["gunicorn"] = self._spawn(
            "gunicorn",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "gitopsportal.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--worker-class",
                "gthread",
                "--timeout",
                "60",
                "--keep-alive",
                "30",  # as behind a load balancer; gunicorn's 2 s races clients reusing a connection
                "--access-logfile",
                "-",
            ],
        )

        def up() -> bool:
            if not self.children["gunicorn"].alive():
                raise RuntimeError(f"gunicorn exited:\n{self.children['gunicorn'].log_tail()}")
            try:
                return http_json("GET", f"{self.gunicorn_url}/healthz", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(up, timeout=60, message="gunicorn to answer /healthz")
        return self.gunicorn_url

    def stop(self) -> None:
        for name in ("gunicorn", "web", "beat", "worker"):
            child = self.children.get(name)
            if child is not None:
                child.stop()
        for emulator in (self.argocd, self.forge):
            if emulator is not None:
                with contextlib.suppress(Exception):
                    emulator.stop()
        self._drop_database()

    def _drop_database(self) -> None:
        if not self.db_name or not self._admin_settings:
            return
        from django.db import connections

        with contextlib.suppress(Exception):
            if self.name in connections.settings:
                connections[self.name].close()
                del connections.settings[self.name]
        with contextlib.suppress(Exception), _admin_connect(self._admin_settings) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def save_logs(self, label: str) -> Path:
        """Copy every child's log (and the emulators' states) to test-artifacts/e2e/<label>/."""
        target = ARTIFACTS / "e2e" / label
        target.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "logs"
        if logs.exists():
            for log in logs.iterdir():
                shutil.copy2(log, target / log.name)
        for name, emulator in (("forge", self.forge), ("argocd", self.argocd)):
            if emulator is not None and getattr(emulator, "base_url", ""):
                with contextlib.suppress(Exception):
                    _, state = http_json("GET", f"{emulator.base_url}/sandbox/state", timeout=5)
                    (target / f"{name}-state.json").write_text(json.dumps(state, indent=1, default=str))
        return target

    def check_children(self) -> None:
        """Fail loudly when a child died (its log tail says why)."""
        for child in self.children.values():
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")

    # -- helpers -----------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base_url + path

    def manage(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run ``manage.py`` against the live database, like an operator would."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def forge_api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the sandbox forge's GitHub-compatible REST API as the portal's bot."""
        return http_json(
            method, self.forge.base_url + path, body, headers={"Authorization": f"token {FORGE_TOKEN}"}
        )

    def pulls(self, state: str = "all") -> list[dict[str, Any]]:
        status, body = self.forge_api("GET", f"/repos/acme/gitops/pulls?state={state}&per_page=100")
        assert status == 200, body
        return body

    def merge_pull(self, number: int, user: str = "sandbox-user") -> dict[str, Any]:
        """Press the merge button on the forge, as a human reviewer."""
        status, body = http_json(
            "POST", f"{self.forge.base_url}/sandbox/pulls/acme/gitops/{number}/merge", {"user": user}
        )
        assert status == 200, body
        return body

    def argocd_faults(self, **faults: Any) -> dict[str, Any]:
        status, body = http_json("POST", f"{self.argocd.base_url}/sandbox/faults", faults)
        assert status == 200, body
        return body

    def argocd_reset_faults(self) -> None:
        http_json("POST", f"{self.argocd.base_url}/sandbox/reset-faults", {})

    def argocd_app(self, name: str) -> dict[str, Any]:
        status, body = http_json(
            "GET",
            f"{self.argocd.base_url}/api/v1/applications/{name}",
            headers={"Authorization": f"Bearer {ARGOCD_TOKEN}"},
        )
        assert status == 200, body
        return body

    @contextlib.contextmanager
    def _unblocked(self) -> Iterator[None]:
        if self._blocker is None:
            yield
        else:
            with self._blocker.unblock():
                yield

    @contextlib.contextmanager
    def orm(self) -> Iterator[str]:
        """Allow ORM reads of the live database here; yields the alias to pass to ``.using()``."""
        from django.db import connections

        with self._unblocked():
            try:
                yield self.name
            finally:
                connections[self.name].close()
