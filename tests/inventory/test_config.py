"""The configuration file: real examples parse, mistakes name the line and the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inventory.config import config_from_env, parse_config
from inventory.configreader import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = """\
argocd:
  - name: main
    url: https://argocd.example.com
    token: secret-token-value
"""


def test_the_sandbox_config_describes_the_emulators(monkeypatch):
    monkeypatch.setenv("SANDBOX_ARGOCD_PORT", "18081")
    monkeypatch.delenv("SANDBOX_FORGE_PORT", raising=False)
    config = parse_config((ROOT / "config/sandbox.yaml").read_text(), "config/sandbox.yaml")
    (instance,) = config.instances
    assert (instance.name, instance.url, instance.allow_http) == ("sandbox", "http://127.0.0.1:18081", True)
    assert instance.token == "sandbox-argocd-token"
    (repo,) = config.repositories
    assert repo.url == "http://127.0.0.1:8082/acme/gitops.git" and repo.full_name == "acme/gitops"
    assert repo.web_url == "http://127.0.0.1:8082/acme/gitops" and repo.forge == "github"
    assert [e.name for e in config.environments] == ["dev", "stage", "prod"]
    prod = config.environments[2]
    assert prod.requires_approval and prod.production_like
    assert config.mapping.name_pattern.fullmatch("ledger-prod-eu-west-1").groupdict() == {
        "app": "ledger",
        "cluster": "prod-eu-west-1",
        "env": "prod",
    }


def test_the_production_example_parses(monkeypatch, tmp_path):
    token = tmp_path / "argocd-token"
    token.write_text("example-token\n")
    monkeypatch.setenv("GITHUB_TOKEN", "gh-token")
    monkeypatch.setenv("FORGE_WEBHOOK_SECRET", "hook")
    text = (ROOT / "config/example.yaml").read_text().replace("/run/secrets/argocd-token", str(token))
    config = parse_config(text, "config/example.yaml")
    assert config.instances[0].token == "example-token"
    assert config.repositories[0].token == "gh-token"
    assert config.environments[2].approvals_required == 2
    assert config.mapping.overrides["legacy-billing-eu"].app == "billing"
    assert {a.name: a.strategy for a in config.applications} == {
        "ledger": "kustomize-images",
        "search-api": "helm-values",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "environments:\n  - name: dev\n  - name: stage\n  - name: prod\n    branch: 12\n",
         "portal.yaml line 9: environments[2].branch: must be a string"),
        (MINIMAL + "    verify_tls: maybe\n", "portal.yaml line 5: argocd[0].verify_tls: must be true or false"),
        (MINIMAL + "    colour: blue\n", "portal.yaml line 5: argocd[0].colour: unknown key"),
        ("argocd:\n  - name: main\n    url: ftp://x\n    token: t\n", "portal.yaml line 3: argocd[0].url: must be an http(s) URL"),
        ("argocd:\n  - name: main\n    url: http://argocd\n    token: t\n", "line 3: argocd[0].url: plain http needs allow_http: true"),
        ("argocd:\n  - name: main\n    url: https://argocd\n", "line 2: argocd[0].token: is required"),
        ("argocd:\n  - name: main\n    url: https://a\n    token: ${NOPE_NOT_SET}\n",
         "line 4: argocd[0].token: environment variable NOPE_NOT_SET is not set"),
        (MINIMAL + "mapping:\n  name_pattern: '^(?P<x>.+)$'\n", "line 6: mapping.name_pattern: needs a named group (?P<app>...)"),
        (MINIMAL + "environments:\n  - name: dev\n    path_pattern: envs/{env}\n", "line 7: environments[0].path_pattern: must contain {app}"),
        (MINIMAL + "environments:\n  - name: dev\n  - name: dev\n", "line 7: environments[1].name: duplicate 'dev'"),
        ("argocd: [\n", "portal.yaml line 2: not valid YAML"),
        ("repositories: []\n", "argocd: is required"),
    ],
)  # fmt: skip
def test_a_bad_file_names_the_line_and_the_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "config/portal.yaml")
    assert message in str(info.value)


def test_error_messages_never_contain_the_token():
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL.replace("url: https://argocd.example.com", "url: 12"), "p.yaml")
    assert "secret-token-value" not in str(info.value)
    text = MINIMAL + "    token_env: ALSO\n"
    with pytest.raises(ConfigError, match="give only one of token, token_file, token_env") as info:
        parse_config(text, "p.yaml")
    assert "secret-token-value" not in str(info.value)


def test_token_file_and_token_env(tmp_path, monkeypatch):
    secret = tmp_path / "tok"
    secret.write_text("from-file\n")
    monkeypatch.setenv("MY_ARGO_TOKEN", "from-env")
    base = "argocd:\n  - name: a\n    url: https://a\n    {}\n"
    assert parse_config(base.format(f"token_file: {secret}"), "p").instances[0].token == "from-file"
    assert parse_config(base.format("token_env: MY_ARGO_TOKEN"), "p").instances[0].token == "from-env"
    with pytest.raises(ConfigError, match=r"line 4: argocd\[0\].token_file: cannot read"):
        parse_config(base.format("token_file: /nonexistent/tok"), "p")


@pytest.mark.parametrize(
    ("env", "url", "verify", "allow_http"),
    [
        ({"ARGOCD_SERVER": "argocd.example.com"}, "https://argocd.example.com", True, False),
        ({"ARGOCD_SERVER": "argocd:8080", "ARGOCD_PLAINTEXT": "true"}, "http://argocd:8080", True, True),
        (
            {"ARGOCD_SERVER": "https://argocd.example.com/", "ARGOCD_INSECURE": "true"},
            "https://argocd.example.com",
            False,
            False,
        ),
    ],
)
def test_the_argocd_cli_variables_configure_one_instance(env, url, verify, allow_http):
    config = config_from_env({**env, "ARGOCD_AUTH_TOKEN": "t0ken"})
    (instance,) = config.instances
    assert (instance.url, instance.verify_tls, instance.allow_http, instance.token) == (
        url,
        verify,
        allow_http,
        "t0ken",
    )
    assert config.infer_environments


def test_the_cli_variables_need_a_token():
    with pytest.raises(ConfigError, match="ARGOCD_AUTH_TOKEN"):
        config_from_env({"ARGOCD_SERVER": "argocd:443"})
    assert config_from_env({}) is None


def test_manage_py_stops_with_one_line_naming_line_and_key(tmp_path):
    bad = tmp_path / "portal.yaml"
    bad.write_text(MINIMAL + "environments:\n  - name: dev\n    soak_minutes: soon\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGOCD_")}
    env["GITOPSPORTAL_CONFIG"] = str(bad)
    proc = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"configuration error: {bad} line 7: environments[0].soak_minutes: must be an integer"]


CHECKLIST = (
    MINIMAL
    + """\
environments:
  - name: dev
    checklist:
      readiness_probe: block
      topology_spread: off
  - name: prod
    production_like: true
    checklist:
      {body}
"""
)


def test_environment_checklist_modes_parse_and_bad_ones_name_the_line():
    config = parse_config(CHECKLIST.format(body="rolling_update: warn"), "portal.yaml")
    dev, prod = config.environments
    assert dev.checklist == {"readiness_probe": "block", "topology_spread": "off"}
    assert prod.checklist == {"rolling_update": "warn"}
    with pytest.raises(ConfigError) as info:
        parse_config(CHECKLIST.format(body="readiness: block"), "portal.yaml")
    assert str(info.value).startswith(
        "portal.yaml line 13: environments[1].checklist.readiness: unknown check"
    )
    assert "readiness_probe, liveness_probe" in str(info.value)
    with pytest.raises(
        ConfigError,
        match=r"line 13: environments\[1\].checklist.resources: expected one of off, warn, block, got 'deny'",
    ):
        parse_config(CHECKLIST.format(body="resources: deny"), "portal.yaml")
    with pytest.raises(ConfigError, match=r"environments\[1\].checklist: must be a mapping of check id"):
        parse_config(CHECKLIST.format(body="- readiness_probe"), "portal.yaml")


def test_the_example_documents_the_checklist(monkeypatch, tmp_path):
    text = (ROOT / "config/example.yaml").read_text()
    assert "checklist:" in text and "graceful_shutdown" in text


@pytest.mark.django_db
def test_applying_the_config_stores_each_environments_checklist():
    from changes.checklist import environment_modes
    from inventory.configapply import config_apply
    from inventory.models import Environment

    config_apply(config=parse_config(CHECKLIST.format(body="rolling_update: warn"), "portal.yaml"))
    prod = Environment.objects.get(name="prod")
    assert prod.checklist == {"rolling_update": "warn"}
    modes = environment_modes(prod)
    assert modes["rolling_update"] == "warn" and modes["readiness_probe"] == "block"
    assert environment_modes(Environment.objects.get(name="dev"))["topology_spread"] == "off"
