"""Check runs (GitHub's Checks API subset) and the simulated CI that reports on every pull request head.

Reference: https://docs.github.com/en/rest/checks/runs. The simulated CI plays a GitHub App: when a
pull request is opened, reopened or its head moves, it reports ``pending`` / ``in_progress`` at once
and the verdict after ``delay`` seconds, both as a commit status (``context``) and as a check run
(``check_name``). The verdict fails when ``mode`` is ``fail``, or in ``auto`` mode when the head
commit's message contains ``fail_marker`` (``[fail-ci]``): a demo can make CI fail from a commit.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from . import payloads
from .payloads import RepoRef
from .routing import ApiError, Request, Response, Router, paginate, validation_failed
from .state import CheckRun, now_iso

if TYPE_CHECKING:
    from .core import ForgeCore

CONCLUSIONS = ("action_required", "cancelled", "failure", "neutral", "success", "skipped", "timed_out")
STATUSES = ("queued", "in_progress", "completed")
CI_APP = "sandbox-ci"


@dataclass
class CIConfig:
    """How the simulated CI behaves (``POST /sandbox/ci``; ``--ci CONTEXT`` on the command line)."""

    enabled: bool = False
    context: str = "ci/validate"
    check_name: str = "validate"
    fail_marker: str = "[fail-ci]"
    mode: str = "auto"  # auto (fail on the marker) | pass | fail
    delay: float = 2.0
    target_url: str = ""
    repos: list[str] = field(default_factory=list)  # owner/name; empty = every repository

    def update(self, data: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(data) - known
        if unknown:
            raise ApiError(422, f"unknown CI settings: {sorted(unknown)}")
        if data.get("mode", self.mode) not in ("auto", "pass", "fail"):
            raise ApiError(422, "mode must be auto, pass or fail")
        for key, value in data.items():
            setattr(self, key, type(getattr(self, key))(value) if key != "repos" else list(value))


class SimulatedCI:
    def __init__(self, core: ForgeCore) -> None:
        self.core = core
        self.config = CIConfig()
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()

    def on_head(self, ref: RepoRef, sha: str, message: str) -> None:
        """A pull request head to validate (opened, reopened, synchronize)."""
        cfg = self.config
        if not cfg.enabled or (cfg.repos and ref.full_name not in cfg.repos):
            return
        self.run(ref, sha, message)

    def run(self, ref: RepoRef, sha: str, message: str) -> None:
        cfg = self.config
        target = cfg.target_url or f"{ref.html}/commit/{sha}"
        self.core.add_status(
            ref,
            sha,
            {"state": "pending", "context": cfg.context, "description": "Validating", "target_url": target},
            CI_APP,
        )
        run = self.add_check_run(ref, sha, {"name": cfg.check_name, "status": "in_progress"})
        failed = cfg.mode == "fail" or (
            cfg.mode == "auto" and bool(cfg.fail_marker) and cfg.fail_marker in message
        )
        verdict = "failure" if failed else "success"
        description = (
            f"Validation failed (commit message contains {cfg.fail_marker})"
            if failed and cfg.mode == "auto"
            else "Validation failed"
            if failed
            else "Manifests valid"
        )

        def finish() -> None:
            self.core.add_status(
                ref,
                sha,
                {"state": verdict, "context": cfg.context, "description": description, "target_url": target},
                CI_APP,
            )
            self.update_check_run(
                ref,
                run.id,
                {
                    "status": "completed",
                    "conclusion": verdict,
                    "output": {"title": description, "summary": description},
                },
            )

        if cfg.delay <= 0:
            finish()
            return
        timer = threading.Timer(cfg.delay, finish)
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def stop(self) -> None:
        with self._lock:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()

    # --- check runs -------------------------------------------------------------------------------
    def add_check_run(self, ref: RepoRef, sha: str, data: dict[str, Any], app: str = CI_APP) -> CheckRun:
        """Create a check run, validated as GitHub does (name, head_sha, status/conclusion pairs)."""
        name = str(data.get("name") or "")
        if not name:
            raise validation_failed({"resource": "CheckRun", "field": "name", "code": "missing_field"})
        status = str(data.get("status") or "queued")
        conclusion = data.get("conclusion")
        if conclusion is not None:
            status = "completed"  # GitHub: providing a conclusion completes the run
        _check(status, conclusion)
        stamp = now_iso()
        output = data.get("output") or {}
        run = CheckRun(
            id=self.core.state.new_id(),
            head_sha=sha,
            name=name,
            status=status,
            conclusion=conclusion,
            started_at=str(data.get("started_at") or stamp),
            completed_at=str(data.get("completed_at") or stamp) if status == "completed" else None,
            details_url=data.get("details_url") or f"{ref.html}/commit/{sha}",
            external_id=str(data.get("external_id") or ""),
            title=output.get("title"),
            summary=output.get("summary"),
            app=app,
        )
        with self.core.state.lock:
            self.core.repo_state(ref).check_runs.append(run)
        self.core.state.save()
        return run

    def update_check_run(self, ref: RepoRef, run_id: int, data: dict[str, Any]) -> CheckRun:
        run = self.find(ref, run_id)
        status = str(data.get("status") or run.status)
        conclusion = data.get("conclusion", run.conclusion)
        if "conclusion" in data and conclusion is not None:
            status = "completed"
        _check(status, conclusion)
        output = data.get("output") or {}
        with self.core.state.lock:
            run.name = str(data.get("name") or run.name)
            run.status, run.conclusion = status, conclusion
            run.details_url = data.get("details_url", run.details_url)
            run.title = output.get("title", run.title)
            run.summary = output.get("summary", run.summary)
            if status == "completed" and run.completed_at is None:
                run.completed_at = str(data.get("completed_at") or now_iso())
        self.core.state.save()
        return run

    def find(self, ref: RepoRef, run_id: int) -> CheckRun:
        for run in self.core.repo_state(ref).check_runs:
            if run.id == run_id:
                return run
        raise ApiError(404, "Not Found")


def _check(status: str, conclusion: Any) -> None:
    if status not in STATUSES:
        raise validation_failed({"resource": "CheckRun", "field": "status", "code": "invalid"})
    if conclusion is not None and conclusion not in CONCLUSIONS:
        raise validation_failed({"resource": "CheckRun", "field": "conclusion", "code": "invalid"})
    if status == "completed" and conclusion is None:
        raise validation_failed(
            {"resource": "CheckRun", "field": "conclusion", "code": "missing_field"},
        )


def check_run(ref: RepoRef, run: CheckRun) -> dict[str, Any]:
    """A check run in GitHub's shape."""
    return {
        "id": run.id,
        "head_sha": run.head_sha,
        "node_id": payloads.node_id("CheckRun", run.id),
        "external_id": run.external_id,
        "url": f"{ref.api}/check-runs/{run.id}",
        "html_url": f"{ref.html}/runs/{run.id}",
        "details_url": run.details_url,
        "status": run.status,
        "conclusion": run.conclusion,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "output": {
            "title": run.title,
            "summary": run.summary,
            "text": None,
            "annotations_count": 0,
            "annotations_url": f"{ref.api}/check-runs/{run.id}/annotations",
        },
        "name": run.name,
        "check_suite": {"id": run.id + 500000},
        "app": {
            "id": 1,
            "slug": run.app,
            "node_id": payloads.node_id("App", 1),
            "owner": payloads.user(ref.base, run.app),
            "name": run.app,
            "description": "Sandbox CI",
            "external_url": ref.base,
            "html_url": f"{ref.base}/apps/{run.app}",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "permissions": {"checks": "write", "statuses": "write"},
            "events": ["pull_request"],
        },
        "pull_requests": [],
    }


class ChecksApi:
    """``/repos/{o}/{r}/check-runs`` and ``/commits/{ref}/check-runs``."""

    def __init__(self, core: ForgeCore, ci: SimulatedCI) -> None:
        self.core = core
        self.ci = ci

    def register(self, router: Router) -> None:
        base = "/repos/{owner}/{repo}"
        router.add("POST", f"{base}/check-runs", self.create, creates=True)
        router.add("GET", f"{base}/check-runs/{{id}}", self.get)
        router.add("PATCH", f"{base}/check-runs/{{id}}", self.update)
        router.add("GET", f"{base}/commits/{{ref+}}/check-runs", self.for_ref)

    def create(self, req: Request) -> Response:
        ref, bare = self.core.repo(req.params["owner"], req.params["repo"])
        data = req.json_object()
        info = bare.commit(str(data.get("head_sha") or ""))
        if info is None:
            raise validation_failed({"resource": "CheckRun", "field": "head_sha", "code": "invalid"})
        run = self.ci.add_check_run(ref, info.sha, data, app=req.login or CI_APP)
        return Response(201, check_run(ref, run))

    def get(self, req: Request) -> Response:
        ref, _bare = self.core.repo(req.params["owner"], req.params["repo"])
        return Response(200, check_run(ref, self.ci.find(ref, _int(req.params["id"]))))

    def update(self, req: Request) -> Response:
        ref, _bare = self.core.repo(req.params["owner"], req.params["repo"])
        run = self.ci.update_check_run(ref, _int(req.params["id"]), req.json_object())
        return Response(200, check_run(ref, run))

    def for_ref(self, req: Request) -> Response:
        ref, bare = self.core.repo(req.params["owner"], req.params["repo"])
        sha = self.core.commit_or_404(bare, req.params["ref"]).sha
        runs = [r for r in reversed(self.core.repo_state(ref).check_runs) if r.head_sha == sha]
        if req.query.get("filter", "latest") == "latest":
            newest: dict[str, CheckRun] = {}
            for run in runs:
                newest.setdefault(run.name, run)  # newest first: the first seen per name wins
            runs = list(newest.values())
        if req.query.get("check_name"):
            runs = [r for r in runs if r.name == req.query["check_name"]]
        if req.query.get("status"):
            runs = [r for r in runs if r.status == req.query["status"]]
        page = paginate(req, runs, self.core.base_url)
        page.body = {"total_count": len(runs), "check_runs": [check_run(ref, r) for r in page.body]}
        return page


def _int(value: str) -> int:
    if not value.isdigit():
        raise ApiError(404, "Not Found")
    return int(value)


def describe(config: CIConfig) -> dict[str, Any]:
    return asdict(config)
