""".env.example lists every environment variable the code and the shipped config read."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = (
    "gitopsportal",
    "core",
    "insight",
    "accounts",
    "inventory",
    "promotions",
    "rollbacks",
    "audit",
    "integrations",
    "sandbox",
    "scripts",
    "config",
)
PY_READS = [
    re.compile(r"\benv_(?:str|bool|int|float|list|choice)\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(r"\b(?:os\.)?environ\.get\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(r"\bos\.getenv\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']"),
    re.compile(r"\bos\.environ\[\s*[\"']([A-Z][A-Z0-9_]*)[\"']\s*\](?!\s*=[^=])"),
]
YAML_READS = [re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::-[^}]*)?\}")]  # ${VAR} in the shipped configs
# Set by the platform or the tooling, not configuration of the portal.
NOT_CONFIGURATION = {
    "HOME",
    "PATH",
    "DJANGO_SETTINGS_MODULE",
    "PYTHONUNBUFFERED",
    "CI",
    "PYTEST_XDIST_WORKER",
    "TMPDIR",
    "USER",
    "LANG",
}


def variables_read() -> dict[str, str]:
    found: dict[str, str] = {}
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix == ".py" and "migrations" not in path.parts:
                patterns = PY_READS
            elif path.suffix in (".yaml", ".yml"):
                patterns = YAML_READS
            else:
                continue
            text = path.read_text(errors="replace")
            if patterns is YAML_READS:  # comments explain the syntax with ${VAR}
                text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
            for pattern in patterns:
                for name in pattern.findall(text):
                    found.setdefault(name, str(path.relative_to(ROOT)))
    return {k: v for k, v in found.items() if k not in NOT_CONFIGURATION and not k.startswith("GIT_")}


def documented() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def test_env_example_lists_every_variable_the_code_reads():
    missing = {name: where for name, where in variables_read().items() if name not in documented()}
    assert not missing, "add to .env.example: " + ", ".join(f"{n} ({w})" for n, w in sorted(missing.items()))


def test_env_example_holds_no_real_secret():
    text = (ROOT / ".env.example").read_text()
    for name in (
        "SECRET_KEY",
        "GITOPSPORTAL_ENCRYPTION_KEYS",
        "AUDIT_SIGNING_KEY",
        "OIDC_RP_CLIENT_SECRET",
        "FORGE_WEBHOOK_SECRET",
        "ARGOCD_AUTH_TOKEN",
    ):
        assert re.search(rf"^{name}=$", text, re.M), f"{name} must be empty in .env.example"
