"""The checks of a commit on each forge: GitHub check runs AND statuses, Gitea statuses, GitLab pipelines.

Answers are the forges' documented shapes (tests/integrations/fixtures/README.md), served by a local
HTTP server; the verdict over them is changes.checks (pure, no database).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from changes.checks import checks_verdict
from integrations.forges import Check, forge_client
from integrations.forges.webhooks import parse_webhook
from tests.integrations.integration_fakes import FakeServer, load_fixture

TOKEN = "secret-forge-token"
SHA = "ce587453ced02b1526dfb4cb910479d431683101"
GH = "/repos/acme/gitops"
GITEA = "/api/v1/repos/acme/gitops"
GITLAB = "/api/v4/projects/acme%2Fgitops"


def _run(name: str, status: str, conclusion: str | None, run_id: int) -> dict[str, Any]:
    run = copy.deepcopy(load_fixture("github/check-runs.json")["check_runs"][0])
    run.update(
        name=name,
        status=status,
        conclusion=conclusion,
        id=run_id,
        html_url=f"https://github.com/acme/gitops/runs/{run_id}",
    )
    return run


def _combined(*statuses: tuple[str, str]) -> dict[str, Any]:
    body = load_fixture("github/combined-status.json")
    template = body["statuses"][0]
    body["statuses"] = [
        {**template, "context": context, "state": state, "target_url": f"https://ci.example/{context}"}
        for context, state in statuses
    ]
    return body


def test_github_counts_check_runs_and_commit_statuses(server: FakeServer) -> None:
    gh = forge_client("github", server.url, TOKEN, "acme/gitops", allow_http=True)
    documented = load_fixture("github/check-runs.json")
    server.add("GET", f"{GH}/commits/{SHA}/check-runs", body=documented)
    server.add("GET", f"{GH}/commits/{SHA}/status", body=_combined(("ci/validate", "failure")))

    checks = gh.checks(SHA)

    assert [(c.name, c.state, c.source) for c in checks] == [
        ("mighty_readme", "neutral", "check_run"),
        ("ci/validate", "failure", "status"),
    ]
    run = checks[0]
    assert run.url == "https://github.com/github/hello-world/runs/4" and run.updated_at is not None
    assert checks[1].url == "https://ci.example/ci/validate"
    assert server.requests[0].query["filter"] == ["latest"]
    # A status failing beside a passing check run fails `any`, and a named requirement.
    assert checks_verdict(checks, ["any"]).verdict == "checks_failed"
    verdict = checks_verdict(checks, ["mighty_readme"])
    assert verdict.verdict == "success" and [r.required for r in verdict.rows] == [True, False]


def test_github_check_runs_follow_the_link_header_and_pending_runs_wait(server: FakeServer) -> None:
    gh = forge_client("github", server.url, TOKEN, "acme/gitops", allow_http=True)
    first = {"total_count": 2, "check_runs": [_run("validate", "completed", "success", 1)]}
    second = {"total_count": 2, "check_runs": [_run("policy", "in_progress", None, 2)]}
    link = f'<{{base}}{GH}/commits/{SHA}/check-runs?page=2>; rel="next"'
    server.add("GET", f"{GH}/commits/{SHA}/check-runs", body=first, headers={"Link": link})
    server.add("GET", f"{GH}/commits/{SHA}/check-runs", body=second, query={"page": "2"})
    server.add("GET", f"{GH}/commits/{SHA}/status", body=_combined(("ci/validate", "success")))

    checks = gh.checks(SHA)

    assert {(c.name, c.state) for c in checks} == {
        ("validate", "success"),
        ("policy", "pending"),
        ("ci/validate", "success"),
    }
    verdict = checks_verdict(checks, ["any"])
    assert verdict.verdict == "waiting" and "policy" in verdict.detail


def test_a_name_reported_as_run_and_status_must_pass_both(server: FakeServer) -> None:
    gh = forge_client("github", server.url, TOKEN, "acme/gitops", allow_http=True)
    runs = {"total_count": 1, "check_runs": [_run("ci/validate", "completed", "success", 7)]}
    server.add("GET", f"{GH}/commits/{SHA}/check-runs", body=runs)
    server.add("GET", f"{GH}/commits/{SHA}/status", body=_combined(("ci/validate", "error")))

    verdict = checks_verdict(gh.checks(SHA), ["ci/validate"])

    assert verdict.verdict == "checks_failed" and verdict.detail == "CI failed: ci/validate"
    assert [r.url for r in verdict.failing] == ["https://ci.example/ci/validate"]


def test_gitea_reads_the_newest_status_of_each_context(server: FakeServer) -> None:
    gitea = forge_client("gitea", f"{server.url}/api/v1", TOKEN, "acme/gitops", allow_http=True)
    body = load_fixture("gitea/combined-status.json")
    body["statuses"].append({**body["statuses"][0], "context": "lint", "status": "warning"})
    server.add("GET", f"{GITEA}/commits/{SHA}/status", body=body)

    checks = gitea.checks(SHA)

    assert server.requests[0].headers["Authorization"] == f"token {TOKEN}"
    assert [(c.name, c.state, c.url) for c in checks] == [
        ("ci/build", "success", "https://ci.example/1"),
        ("ci/e2e", "pending", "https://ci.example/2"),
        ("lint", "warning", "https://ci.example/1"),
    ]
    assert checks[0].updated_at is not None
    assert checks_verdict(checks, ["ci/build"]).verdict == "success"
    assert checks_verdict(checks, ["ci/build", "lint"]).verdict == "checks_failed"  # warning is not success
    assert checks_verdict(checks, ["any"]).verdict == "checks_failed"


def test_gitlab_reads_pipelines_and_job_statuses(server: FakeServer) -> None:
    gitlab = forge_client("gitlab", f"{server.url}/api/v4", TOKEN, "acme/gitops", allow_http=True)
    server.add("GET", f"{GITLAB}/pipelines", body=load_fixture("gitlab/pipelines.json"))
    jobs = load_fixture("gitlab/statuses.json")
    jobs[1]["allow_failure"] = True  # a failed job allowed to fail: "passed with warnings"
    server.add("GET", f"{GITLAB}/repository/commits/{SHA}/statuses", body=jobs)

    checks = gitlab.checks(SHA)

    assert server.requests[0].query["sha"] == [SHA]
    assert [(c.name, c.state, c.source) for c in checks] == [
        ("pipeline", "failure", "pipeline"),  # the newest pipeline of the head (an MR pipeline)
        ("policy", "pending", "pipeline"),
        ("build", "success", "status"),
        ("e2e", "neutral", "status"),
    ]
    assert checks[0].url == "https://gitlab.example/acme/gitops/-/pipelines/47"
    assert checks_verdict(checks, ["build", "e2e"]).verdict == "success"
    verdict = checks_verdict(checks, ["pipeline"])
    assert verdict.verdict == "checks_failed" and verdict.failing[0].url.endswith("/pipelines/47")


def test_no_checks_reported_is_waiting_never_success() -> None:
    assert checks_verdict((), ["any"]).verdict == "waiting"
    assert checks_verdict((), []).verdict == "waiting"
    named = checks_verdict((), ["ci/validate"])
    assert named.verdict == "waiting" and named.detail == "waiting for required checks: ci/validate"
    assert [(r.name, r.state, r.required) for r in named.rows] == [("ci/validate", "expected", True)]


def test_required_names_wait_for_missing_checks_beside_any() -> None:
    passing = (Check("build", "success", "status"),)
    assert checks_verdict(passing, ["any"]).verdict == "success"
    assert checks_verdict(passing, ["any", "ci/validate"]).verdict == "waiting"
    skipped = (Check("ci/validate", "skipped", "check_run"), Check("other", "failure", "status"))
    verdict = checks_verdict(skipped, ["ci/validate"])
    assert verdict.verdict == "success"  # skipped satisfies a required check; `other` is optional
    assert [(r.name, r.required) for r in verdict.rows] == [("ci/validate", True), ("other", False)]


def test_ci_webhooks_name_the_commit_they_report_on() -> None:
    def parse(forge: str, headers: dict[str, str], payload: dict[str, Any]) -> tuple[str, str | None]:
        event = parse_webhook(forge, headers, json.dumps(payload).encode())
        return event.kind, event.after_sha

    repo = {"full_name": "acme/gitops"}
    status = {"sha": SHA, "state": "failure", "context": "ci/validate", "repository": repo}
    assert parse("github", {"X-GitHub-Event": "status"}, status) == ("checks", SHA)
    run = {"action": "completed", "check_run": {"head_sha": SHA, "name": "validate"}, "repository": repo}
    assert parse("github", {"X-GitHub-Event": "check_run"}, run) == ("checks", SHA)
    assert parse("gitea", {"X-Gitea-Event": "status"}, status) == ("checks", SHA)
    project = {"path_with_namespace": "acme/gitops"}
    pipeline = {
        "object_kind": "pipeline",
        "object_attributes": {"sha": SHA, "status": "failed"},
        "project": project,
    }
    assert parse("gitlab", {"X-Gitlab-Event": "Pipeline Hook"}, pipeline) == ("checks", SHA)
    job = {"object_kind": "build", "sha": SHA, "build_status": "failed", "project": project}
    assert parse("gitlab", {"X-Gitlab-Event": "Job Hook"}, job) == ("checks", SHA)
