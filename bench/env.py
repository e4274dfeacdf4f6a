"""The bench's own database, Django in-process, the work directory and the machine description."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB_NAME = "gitopsportal_bench"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class BenchEnv:
    database_url: str  # the bench's own database
    admin_url: str  # the maintenance database, to drop and create it
    redis_url: str
    workdir: Path

    @property
    def db_name(self) -> str:
        return urlsplit(self.database_url).path.lstrip("/")


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def bench_env(*, db_name: str, workdir: Path) -> BenchEnv:
    """Derive the bench database from DATABASE_URL (same server, its own database)."""
    if not _DB_NAME.match(db_name):
        raise SystemExit(f"--db-name: expected a plain PostgreSQL identifier, got {db_name!r}")
    base = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/gitopsportal"
    if not base.startswith(("postgres://", "postgresql://")):
        raise SystemExit("the benchmark needs PostgreSQL: set DATABASE_URL=postgres://...")
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/9"
    return BenchEnv(_with_db(base, db_name), _with_db(base, "postgres"), redis_url, workdir.resolve())


def recreate_database(env: BenchEnv) -> None:
    """Drop and create the bench database, then migrate it with manage.py (a fresh schema per run)."""
    import psycopg

    with psycopg.connect(env.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{env.db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{env.db_name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0", "--no-input", "--skip-checks"],
        cwd=ROOT,
        env=child_env(env),
        check=True,
    )


def child_env(env: BenchEnv, **extra: str) -> dict[str, str]:
    """The environment of every process the bench starts (manage.py, celery, exports)."""
    out = dict(os.environ)
    out.update(
        {
            "DJANGO_SETTINGS_MODULE": "gitopsportal.settings",
            "DATABASE_URL": env.database_url,
            "REDIS_URL": env.redis_url,
            "GITOPSPORTAL_MIRRORS_DIR": str(env.workdir / "mirrors"),
            "GITOPSPORTAL_WORKSPACES_DIR": str(env.workdir / "workspaces"),
            "SANDBOX_ENABLED": "true",
            "DEBUG": "false",  # as in production: no query log, cached templates
            "AXES_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
    )
    out.update(extra)
    return out


def setup_django(env: BenchEnv) -> None:
    """Point this process at the bench database and start Django."""
    os.environ.update(child_env(env))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def fresh_workdir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# --- the machine --------------------------------------------------------------------------------------


def _first(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
    except OSError:
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def machine_info() -> dict[str, str]:
    """Cores, memory, CPU and versions of everything measured (call after setup_django)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    try:
        import redis
        from django.conf import settings

        redis_version = redis.Redis.from_url(settings.CELERY_BROKER_URL).info("server")["redis_version"]
    except Exception as exc:  # reported, not fatal: only the promotion figure needs Redis
        redis_version = f"unavailable ({type(exc).__name__})"
    head = _first(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    import django

    return {
        "cores": str(os.cpu_count() or "?"),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": pg,
        "redis": redis_version,
        "git": _first(["git", "--version"]).removeprefix("git version "),
        "portal commit": head + (" (uncommitted changes)" if dirty not in ("", "?") else ""),
        "load average at start": load_average(),
    }


def load_average() -> str:
    """1/5/15-minute load: the bench shares the machine with whatever else runs (ratios stay valid)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
