"""`/sandbox/*` endpoints: no GitHub equivalent; tests and the demo use them to steer the forge."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from . import payloads
from .checks import SimulatedCI, check_run, describe
from .core import ForgeCore
from .faults import FaultInjector
from .gitstore import CommitInfo
from .payloads import RepoRef
from .pulls import REVIEW_EVENTS, pull_merge
from .routing import ApiError, Request, Response, Router, not_found
from .state import Protection, Review, now_iso

HUMAN = "sandbox-user"  # who merges or reviews through the admin API unless "user" says otherwise


class AdminApi:
    def __init__(self, core: ForgeCore, faults: FaultInjector, ci: SimulatedCI) -> None:
        self.core = core
        self.faults = faults
        self.ci = ci

    def register(self, router: Router) -> None:
        router.add("GET", "/sandbox/state", self.get_state)
        router.add("POST", "/sandbox/faults", self.add_faults)
        router.add("GET", "/sandbox/faults", self.list_faults)
        router.add("POST", "/sandbox/reset-faults", self.reset_faults)
        router.add("POST", "/sandbox/checks", self.set_check)
        router.add("GET", "/sandbox/ci", self.get_ci)
        router.add("POST", "/sandbox/ci", self.set_ci)
        router.add("POST", "/sandbox/ci/run", self.run_ci)
        router.add("PUT", "/sandbox/webhook", self.set_webhook)
        router.add("PUT", "/sandbox/protection", self.set_protection)
        router.add("POST", "/sandbox/pulls/{owner}/{repo}/{number}/merge", self.merge)
        router.add("POST", "/sandbox/pulls/{owner}/{repo}/{number}/review", self.review)

    def get_state(self, req: Request) -> Response:
        repos: dict[str, Any] = {}
        for owner, name in self.core.list_repos():
            ref, bare = self.core.repo(owner, name)
            pulls = [self._pull_summary(bare, p) for p in self.core.repo_state(ref).pulls.values()]
            repos[ref.full_name] = {
                "default_branch": bare.default_branch(),
                "branches": bare.branches(),
                "pulls": pulls,
                "labels": sorted(self.core.repo_state(ref).labels),
                "statuses": [asdict(s) for s in self.core.repo_state(ref).statuses[-100:]],
                "protection": {b: asdict(p) for b, p in self.core.repo_state(ref).protection.items()},
            }
        with self.core.state.lock:
            return Response(
                200,
                {
                    "base_url": self.core.base_url,
                    "users": sorted(set(self.core.users.values())),
                    "repos": repos,
                    "webhook": {"url": self.core.webhooks.url, "signed": bool(self.core.webhooks.secret)},
                    "deliveries": [asdict(d) for d in self.core.state.deliveries],
                    "requests": dict(self.core.state.request_counts),
                    "request_log": list(self.core.state.request_log),
                    "faults": self.faults.describe(),
                },
            )

    def _pull_summary(self, bare: Any, item: Any) -> dict[str, Any]:
        head, base = self.core.live_shas(bare, item)
        data = asdict(item)
        data.update({"head_sha": head, "base_sha": base, "merged": item.merged})
        data["reviews"] = [{"user": r.user, "state": r.state} for r in item.reviews]
        data["comments"] = len(item.comments)
        return data

    def add_faults(self, req: Request) -> Response:
        data = req.json()
        if not isinstance(data, dict | list):
            raise ApiError(400, "Problems parsing JSON")
        return Response(201, {"faults": self.faults.add(data)})

    def list_faults(self, req: Request) -> Response:
        return Response(200, {"faults": self.faults.describe()})

    def reset_faults(self, req: Request) -> Response:
        self.faults.reset()
        return Response(200, {"faults": []})

    def set_check(self, req: Request) -> Response:
        """Play CI: set a commit status (e.g. a required check) on a sha or branch; with
        ``"kind": "check_run"`` a completed check run named ``context`` instead."""
        data = req.json_object()
        ref, info = self._commit_of(data)
        if data.get("kind") == "check_run":
            state = str(data.get("state", "success"))
            run_body: dict[str, Any] = {"name": data.get("context", "ci/test")}
            if state == "pending":
                run_body["status"] = "in_progress"
            else:
                run_body["conclusion"] = "failure" if state == "error" else state
            run_body["output"] = {"title": data.get("description"), "summary": data.get("description")}
            run = self.ci.add_check_run(ref, info.sha, run_body, app=str(data.get("creator") or "sandbox-ci"))
            return Response(201, check_run(ref, run))
        body = {
            "state": data.get("state", "success"),
            "context": data.get("context", "ci/test"),
            "description": data.get("description"),
            "target_url": data.get("target_url"),
        }
        item = self.core.add_status(ref, info.sha, body, str(data.get("creator") or "sandbox-ci"))
        return Response(201, payloads.status(ref, item))

    def get_ci(self, req: Request) -> Response:
        return Response(200, describe(self.ci.config))

    def set_ci(self, req: Request) -> Response:
        """Configure the simulated CI (enabled, context, check_name, fail_marker, mode, delay, repos)."""
        self.ci.config.update(req.json_object())
        return Response(200, describe(self.ci.config))

    def run_ci(self, req: Request) -> Response:
        """Run the simulated CI now on a commit (``repo`` plus ``sha`` or ``ref``), enabled or not."""
        ref, info = self._commit_of(req.json_object())
        self.ci.run(ref, info.sha, info.message)
        return Response(202, {"sha": info.sha, **describe(self.ci.config)})

    def _commit_of(self, data: dict[str, Any]) -> tuple[RepoRef, CommitInfo]:
        """The repository (``repo``: owner/name) and commit (``sha`` or ``ref``) a lever names."""
        owner, _, name = str(data.get("repo", "")).partition("/")
        ref, bare = self.core.repo(owner, name)
        info = bare.commit(str(data.get("sha") or data.get("ref") or ""))
        if info is None:
            raise ApiError(422, "sha or ref must name a commit")
        return ref, info

    def set_protection(self, req: Request) -> Response:
        """Protect a branch: required status contexts and approvals (empty body fields = unprotect)."""
        data = req.json_object()
        owner, _, name = str(data.get("repo", "")).partition("/")
        ref, bare = self.core.repo(owner, name)
        branch = str(data.get("branch") or bare.default_branch())
        rule = Protection(
            contexts=[str(c) for c in data.get("contexts") or []],
            required_approvals=int(data.get("required_approvals") or 0),
        )
        with self.core.state.lock:
            if rule.contexts or rule.required_approvals:
                self.core.repo_state(ref).protection[branch] = rule
            else:
                self.core.repo_state(ref).protection.pop(branch, None)
        self.core.state.save()
        return Response(200, {"repo": ref.full_name, "branch": branch, **asdict(rule)})

    def set_webhook(self, req: Request) -> Response:
        data = req.json_object()
        self.core.webhooks.configure(data.get("url") or None, data.get("secret") or None)
        return Response(200, {"url": self.core.webhooks.url, "signed": bool(self.core.webhooks.secret)})

    def merge(self, req: Request) -> Response:
        """Merge as a human would with the button: same code path as the API, different actor."""
        ref, bare = self.core.repo(req.params["owner"], req.params["repo"])
        item = self.core.pull(ref, req.params["number"])
        data = req.json() or {}
        login = str(data.get("user") or HUMAN)
        return Response(200, pull_merge(self.core, ref, bare, item, login, data))

    def review(self, req: Request) -> Response:
        ref, bare = self.core.repo(req.params["owner"], req.params["repo"])
        item = self.core.pull(ref, req.params["number"])
        data = req.json() or {}
        event = str(data.get("event") or "APPROVE")
        if event not in REVIEW_EVENTS:
            raise not_found()
        head, _base = self.core.live_shas(bare, item)
        login = str(data.get("user") or HUMAN)
        review = Review(
            id=self.core.state.new_id(),
            user=login,
            state=REVIEW_EVENTS[event],
            body=str(data.get("body") or ""),
            commit_id=head,
            submitted_at=now_iso(),
        )
        with self.core.state.lock:
            item.reviews.append(review)
            item.requested_reviewers = [r for r in item.requested_reviewers if r != login]
        self.core.state.save()
        return Response(200, payloads.review(ref, item.number, review))
