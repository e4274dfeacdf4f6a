"""The floor imports no app, and apps do not reach up into gitopsportal/ (settings, urls, Celery, health)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = {
    "accounts",
    "api",
    "audit",
    "bench",
    "core",
    "gitopsportal",
    "insight",
    "integrations",
    "inventory",
    "promotions",
    "rollbacks",
    "sandbox",
    "scripts",
    "tests",
}
APPS = ("accounts", "api", "audit", "insight", "integrations", "inventory", "promotions", "rollbacks")
# Task registration: the queue names live with the Celery app.
ALLOWED_FROM_APPS = {"gitopsportal.celery"}


def imported_modules(path: Path) -> set[str]:
    """Return every absolute module a file imports, at any depth of the file."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def python_files(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if "migrations" not in p.parts)


def test_core_imports_django_and_libraries_only():
    found = {
        (str(path.relative_to(ROOT)), module)
        for path in python_files("core")
        for module in imported_modules(path)
        if module.split(".")[0] in PROJECT_PACKAGES - {"core"}
    }
    assert not found, f"core must import no project package: {sorted(found)}"


def test_apps_do_not_import_gitopsportal_except_the_celery_app():
    found = {
        (str(path.relative_to(ROOT)), module)
        for app in APPS
        for path in python_files(app)
        for module in imported_modules(path)
        if module.split(".")[0] == "gitopsportal" and module not in ALLOWED_FROM_APPS
    }
    assert not found, f"move the piece to core/ or api/ instead: {sorted(found)}"
