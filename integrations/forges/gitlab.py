"""GitLab REST client (api/v4): merge requests presented as PullRequest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from integrations.forges.base import (
    BranchAlreadyExists,
    Check,
    CheckState,
    CommitStatusSummary,
    Comparison,
    ForgeResponseError,
    ForgeValidationError,
    MergeMethod,
    MergeNotAllowed,
    PullRequest,
    PullRequestAlreadyExists,
    PullRequestState,
    RestForge,
    StatusContext,
    combine_states,
    decode,
    newest_per_name,
    seg,
)
from integrations.http import JsonReader, Secret

DOCS = "https://docs.gitlab.com/api/merge_requests/"
MR_STATES = frozenset({"opened", "closed", "locked", "merged"})
_STATE_MAP: dict[str, PullRequestState] = {
    "opened": "open",
    "closed": "closed",
    "locked": "closed",
    "merged": "merged",
}
_API_STATE = {"open": "opened", "closed": "closed", "merged": "merged", "all": "all"}
# GitLab pipeline states folded into GitHub's vocabulary for CommitStatusSummary.state.
_STATUS_MAP = {
    "success": "success",
    "failed": "failure",
    "canceled": "error",
    "skipped": "success",
    "pending": "pending",
    "running": "pending",
    "created": "pending",
    "manual": "pending",
    "waiting_for_resource": "pending",
    "preparing": "pending",
    "scheduled": "pending",
}
DRAFT_PREFIX = "Draft: "
# GitLab pipeline and job states in the portal's check vocabulary: `manual` and `scheduled` wait
# for a person or a time, so they are still pending.
_CHECK_STATES: dict[str, CheckState] = {
    "success": "success",
    "failed": "failure",
    "canceled": "cancelled",
    "canceling": "pending",
    "skipped": "skipped",
    "created": "pending",
    "waiting_for_resource": "pending",
    "waiting_for_callback": "pending",
    "preparing": "pending",
    "pending": "pending",
    "running": "pending",
    "manual": "pending",
    "scheduled": "pending",
}
PIPELINE_CHECK = "pipeline"  # the check name of a pipeline without a `name`


def _parse_compare(r: JsonReader) -> Comparison:
    commits = r.objs("commits")
    files = {d.text("new_path") or d.text("old_path") for d in r.objs("diffs")}
    return Comparison(
        status=None,
        ahead_by=len(commits),
        behind_by=None,
        commit_shas=tuple(c.req_text("id") for c in commits),
        files=tuple(sorted(f for f in files if f)),
    )


class GitLabClient(RestForge):
    """Merge requests, branches and statuses on GitLab."""

    kind = "gitlab"
    # GitLab validates an MR description at 1 MiB (1,048,576) and a note at 1,000,000 characters
    # ("is too long (maximum is 1000000 characters)"): the smaller one.
    BODY_LIMIT = 1_000_000

    def auth_headers(self, token: str) -> dict[str, Secret]:
        """Return GitLab's PRIVATE-TOKEN header."""
        return {"PRIVATE-TOKEN": Secret(token)}

    @property
    def _project(self) -> str:
        # `:id` may be the URL-encoded full path (group%2Fsubgroup%2Fproject).
        return f"/projects/{seg(self.repo_full_name)}"

    def _parse_mr(self, r: JsonReader) -> PullRequest:
        state = r.enum("state", MR_STATES) or r.fail("state", "missing")
        iid = r.req_integer("iid")
        merged = state == "merged"
        merge_user = r.opt_obj("merge_user") or r.opt_obj("merged_by")
        title = r.text("title")
        return PullRequest(
            number=iid,
            url=r.text("web_url"),
            api_url=f"{self.api_url}{self._project}/merge_requests/{iid}",
            state=_STATE_MAP[state],
            merged=merged,
            merge_commit_sha=(r.opt_text("merge_commit_sha") or r.opt_text("squash_commit_sha"))
            if merged
            else None,
            head_ref=r.req_text("source_branch"),
            head_sha=r.text("sha"),
            base_ref=r.req_text("target_branch"),
            title=title,
            body=r.text("description"),
            author=r.obj("author").opt_text("username"),
            merged_by=merge_user.opt_text("username") if merge_user else None,
            merged_at=r.time("merged_at"),
            created_at=r.time("created_at"),
            draft=r.flag("draft") or r.flag("work_in_progress") or title.startswith(DRAFT_PREFIX),
            labels=tuple(x for x in r.array("labels") if isinstance(x, str)),
            head_repo=self._source_repo(r),
        )

    def _source_repo(self, r: JsonReader) -> str | None:
        # An MR names its projects by id: the same id on both sides is this project, anything
        # else (a fork) is reported as "project:<id>", which never equals a full path.
        source, target = r.integer("source_project_id"), r.integer("target_project_id")
        if source is None:
            return None
        return self.repo_full_name if source == target else f"project:{source}"

    def current_login(self) -> str:
        """Return the username of the token's user."""
        # Reference: https://docs.gitlab.com/api/users/#get-the-current-user
        return self.parse("user", lambda r: r.req_text("username"), self.call("GET", "/user"))

    def _pr(self, data: object) -> PullRequest:
        return self.parse("merge request", self._parse_mr, data)

    def _mr(self, number: int) -> str:
        return f"{self._project}/merge_requests/{int(number)}"

    # -- branches -------------------------------------------------------------------------------

    def get_branch_sha(self, branch: str) -> str | None:
        """Return the branch head SHA, or None if the branch does not exist."""
        # Reference: https://docs.gitlab.com/api/branches/#get-single-repository-branch
        resp = self.send("GET", f"{self._project}/repository/branches/{seg(branch)}", ok_missing=True)
        if resp is None:
            return None
        return self.parse("branch", lambda r: r.req_obj("commit").req_text("id"), decode(resp))

    def create_branch(self, branch: str, sha: str) -> None:
        """Create a branch at `sha`; an existing branch at the same SHA is success."""
        try:
            # Reference: https://docs.gitlab.com/api/branches/#create-repository-branch
            self.call("POST", f"{self._project}/repository/branches", params={"branch": branch, "ref": sha})
        except ForgeValidationError as exc:
            if "already exists" not in str(exc):
                raise
            existing = self.get_branch_sha(branch)
            if existing != sha:
                raise BranchAlreadyExists(f"branch {branch!r} exists at {existing}", sha=existing) from None

    def delete_branch(self, branch: str) -> None:
        """Delete a branch; a missing branch is success."""
        # Reference: https://docs.gitlab.com/api/branches/#delete-repository-branch
        self.send("DELETE", f"{self._project}/repository/branches/{seg(branch)}", ok_missing=True)

    # -- merge requests -------------------------------------------------------------------------

    def find_pull_request(self, *, head: str, base: str, state: str = "open") -> PullRequest | None:
        """Return the newest MR from `head` into `base` in `state` (open/closed/merged/all)."""
        params = {
            "state": _API_STATE.get(state, state),
            "source_branch": head,
            "target_branch": base,
            "per_page": 100,
        }
        # Reference: https://docs.gitlab.com/api/merge_requests/#list-project-merge-requests
        items = self.paginate(f"{self._project}/merge_requests", params)
        found = [pr for pr in map(self._pr, items) if pr.head_ref == head and pr.base_ref == base]
        return max(found, key=lambda pr: pr.number, default=None)

    def create_pull_request(
        self, *, head: str, base: str, title: str, body: str, draft: bool = False
    ) -> PullRequest:
        """Open an MR; raise PullRequestAlreadyExists on GitLab's 409 duplicate answer."""
        payload = {
            "source_branch": head,
            "target_branch": base,
            "title": (DRAFT_PREFIX + title) if draft else title,
            "description": body,
        }
        try:
            # Reference: https://docs.gitlab.com/api/merge_requests/#create-mr
            return self._pr(self.call("POST", f"{self._project}/merge_requests", body=payload))
        except ForgeValidationError as exc:
            if exc.status == 409:
                raise PullRequestAlreadyExists(str(exc), status=409) from None
            raise

    def get_pull_request(self, number: int) -> PullRequest:
        """Return one MR by iid."""
        # Reference: https://docs.gitlab.com/api/merge_requests/#get-single-mr
        return self._pr(self.call("GET", self._mr(number)))

    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None, state: str | None = None
    ) -> PullRequest:
        """Change title, description or state (open/closed) of an MR."""
        payload: dict[str, Any] = {}
        if title is not None:
            payload["title"] = title
        if body is not None:
            payload["description"] = body
        if state is not None:
            payload["state_event"] = {"closed": "close", "open": "reopen"}.get(state) or _bad_state(state)
        # Reference: https://docs.gitlab.com/api/merge_requests/#update-mr
        return self._pr(self.call("PUT", self._mr(number), body=payload))

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        """Add labels (by name; GitLab creates unknown ones)."""
        if labels:
            # Reference: https://docs.gitlab.com/api/merge_requests/#update-mr (add_labels)
            self.call("PUT", self._mr(number), body={"add_labels": ",".join(labels)})

    def _user_id(self, username: str) -> int:
        # Reference: https://docs.gitlab.com/api/users/#list-users (username filter)
        users = self.call("GET", "/users", params={"username": username})
        ids = [u.req_integer("id") for u in self.parse_many("users", lambda r: r, users or [])]
        if not ids:
            raise ForgeValidationError(f"gitlab: unknown user {username!r}")
        return ids[0]

    def request_reviewers(self, number: int, reviewers: Sequence[str]) -> None:
        """Add reviewers (usernames resolved to ids) while keeping the existing ones."""
        if not reviewers:
            return
        current = self.call("GET", self._mr(number))
        existing = self.parse(
            "merge request", lambda r: [u.req_integer("id") for u in r.objs("reviewers")], current
        )
        wanted = existing + [uid for uid in map(self._user_id, reviewers) if uid not in existing]
        # Reference: https://docs.gitlab.com/api/merge_requests/#update-mr (reviewer_ids)
        self.call("PUT", self._mr(number), body={"reviewer_ids": wanted})

    def comment(self, number: int, body: str) -> None:
        """Add a note to an MR."""
        # Reference: https://docs.gitlab.com/api/notes/#create-new-merge-request-note
        self.call("POST", f"{self._mr(number)}/notes", body={"body": body})

    def merge_pull_request(
        self, number: int, *, sha: str | None = None, method: MergeMethod = "merge"
    ) -> str:
        """Accept an MR (only if its head is `sha`, when given); return the resulting commit SHA."""
        payload: dict[str, Any] = {"squash": method == "squash"}
        if sha:
            payload["sha"] = sha
        try:
            # Reference: https://docs.gitlab.com/api/merge_requests/#merge-a-merge-request
            data = self.call("PUT", f"{self._mr(number)}/merge", body=payload)
        except ForgeValidationError as exc:
            if exc.status in (405, 406, 409, 422):
                raise MergeNotAllowed(str(exc), status=exc.status) from None
            raise
        merged = self._pr(data)
        # Fast-forward merges leave merge_commit_sha null: the head SHA is then what landed.
        result = merged.merge_commit_sha or (merged.head_sha if merged.merged else None)
        if not result:
            raise ForgeResponseError(f"gitlab: MR !{number} did not report a merge commit")
        return result

    # -- commits --------------------------------------------------------------------------------

    def combined_status(self, sha: str) -> CommitStatusSummary:
        """Combine the commit's statuses (GitLab has no combined endpoint)."""
        # Reference: https://docs.gitlab.com/api/commits/#list-the-statuses-of-a-commit
        items = list(
            self.paginate(f"{self._project}/repository/commits/{seg(sha)}/statuses", {"per_page": 100})
        )
        contexts = tuple(self.parse_many("commit statuses", _parse_context, items))
        return CommitStatusSummary(state=combine_states([c.state for c in contexts]), contexts=contexts)

    def checks(self, sha: str) -> tuple[Check, ...]:
        """Return the newest pipeline (per pipeline name) and the newest job/external status per name."""
        # Branch and merge request pipelines of the head both carry its SHA.
        # Reference: https://docs.gitlab.com/api/pipelines/#list-project-pipelines
        pipelines = self.paginate(
            f"{self._project}/pipelines", {"sha": sha, "order_by": "id", "sort": "desc", "per_page": 100}
        )
        found = [self.parse("pipeline", _parse_pipeline, p) for p in pipelines]
        # Jobs and external CI statuses (POST /statuses), newest of each name (all=false).
        # Reference: https://docs.gitlab.com/api/commits/#list-the-statuses-of-a-commit
        statuses = self.paginate(f"{self._project}/repository/commits/{seg(sha)}/statuses", {"per_page": 100})
        found += [self.parse("commit status", _parse_job_status, s) for s in statuses]
        return newest_per_name(found)

    def compare(self, base: str, head: str) -> Comparison:
        """Compare two refs or SHAs."""
        # Reference: https://docs.gitlab.com/api/repositories/#compare-branches-tags-or-commits
        data = self.call("GET", f"{self._project}/repository/compare", params={"from": base, "to": head})
        return self.parse("comparison", _parse_compare, data)


def _parse_context(r: JsonReader) -> StatusContext:
    raw = r.req_text("status")
    return StatusContext(
        r.text("name"), _STATUS_MAP.get(raw, "pending"), r.opt_text("description"), r.opt_text("target_url")
    )


def _parse_pipeline(r: JsonReader) -> Check:
    return Check(
        name=r.opt_text("name") or PIPELINE_CHECK,
        state=_CHECK_STATES.get(r.req_text("status"), "error"),
        source="pipeline",
        url=r.opt_text("web_url"),
        description=f"pipeline #{r.integer('id')} ({r.text('source') or 'push'})",
        updated_at=r.time("updated_at") or r.time("created_at"),
    )


def _parse_job_status(r: JsonReader) -> Check:
    raw = r.req_text("status")
    state = _CHECK_STATES.get(raw, "error")
    if state == "failure" and r.flag("allow_failure"):
        state = "neutral"  # GitLab: "passed with warnings"; the pipeline still succeeds
    return Check(
        name=r.text("name") or "default",
        state=state,
        source="status",
        url=r.opt_text("target_url"),
        description=r.opt_text("description"),
        updated_at=r.time("finished_at") or r.time("started_at") or r.time("created_at"),
    )


def _bad_state(state: str) -> str:
    raise ForgeValidationError(f"gitlab: unsupported state change {state!r}")
