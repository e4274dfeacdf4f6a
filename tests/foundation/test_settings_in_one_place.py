"""Settings in one place: defined in settings.py from the environment, listed in .env.example."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
SKIP_PARTS = {".venv", "venv", "node_modules", "tests", "migrations", "var", ".git"}
ENV_HELPERS = {"env_str", "env_bool", "env_int", "env_float", "env_list", "env_choice"}


def production_sources() -> list[Path]:
    """Return the project's Python files outside tests, migrations and virtual environments."""
    return sorted(
        path for path in ROOT.rglob("*.py") if not SKIP_PARTS.intersection(path.relative_to(ROOT).parts)
    )


def test_no_code_reads_a_setting_with_getattr_and_a_default():
    found: dict[str, int] = {}
    for path in production_sources():
        count = len(re.findall(r"getattr\(\s*(?:django_)?settings\s*,", path.read_text()))
        if count:
            found[str(path.relative_to(ROOT))] = count
    assert not found, (
        "define the setting in gitopsportal/settings.py and read settings.NAME instead of getattr: "
        + ", ".join(f"{name} ({n})" for name, n in sorted(found.items()))
    )


def _imports_django_settings(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "django.conf"
        and any(alias.name == "settings" and alias.asname is None for alias in node.names)
        for node in ast.walk(tree)
    )


def settings_read_in_code() -> dict[str, str]:
    """Return NAME -> first file of every `settings.NAME` read in a module importing django's settings."""
    names: dict[str, str] = {}
    for path in production_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        if not _imports_django_settings(tree):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "settings"
                and node.attr.isupper()
                and isinstance(node.ctx, ast.Load)
            ):
                names.setdefault(node.attr, str(path.relative_to(ROOT)))
    return names


def test_every_setting_the_code_reads_is_defined():
    read = settings_read_in_code()
    assert "PORTAL_BASE_URL" in read  # the scan finds reads at all
    missing = {name: where for name, where in read.items() if not hasattr(settings, name)}
    assert not missing, "define in gitopsportal/settings.py: " + ", ".join(
        f"{name} ({where})" for name, where in sorted(missing.items())
    )


def test_the_settings_other_branches_adopt_are_defined_with_their_types():
    # The names the getattr sites in GETATTR_ALLOWLIST switch to.
    assert isinstance(settings.POLL_TIMEOUT_SECONDS, int)
    assert isinstance(settings.PROMOTION_PR_LEASE_SECONDS, int)
    assert settings.PROMOTION_PR_LEASE_SECONDS > settings.CELERY_TASK_TIME_LIMIT
    assert settings.ARGOCD_TIMEOUT == (
        settings.ARGOCD_CONNECT_TIMEOUT_SECONDS,
        settings.ARGOCD_READ_TIMEOUT_SECONDS,
    )
    assert all(isinstance(value, float) for value in settings.ARGOCD_TIMEOUT)
    assert isinstance(settings.GIT_COMMITTER_NAME, str) and settings.GIT_COMMITTER_NAME
    assert isinstance(settings.GIT_COMMITTER_EMAIL, str) and "@" in settings.GIT_COMMITTER_EMAIL
    assert isinstance(settings.SWEEP_EXPIRES_SECONDS, float)
    for name in ("AUDIT_SIGNING_KEY", "AUDIT_VERIFY_PUBLIC_KEYS", "PRODUCTION", "SANDBOX_ENABLED"):
        assert hasattr(settings, name), name


def env_variables_read_by_settings() -> set[str]:
    tree = ast.parse((ROOT / "gitopsportal" / "settings.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ENV_HELPERS
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }


def test_every_variable_settings_reads_is_in_env_example():
    read = env_variables_read_by_settings()
    assert {"POLL_TIMEOUT_SECONDS", "ARGOCD_READ_TIMEOUT_SECONDS", "PROMOTION_PR_LEASE_SECONDS"} <= read
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    assert not read - listed, f"add to .env.example (with a one-line comment): {sorted(read - listed)}"
