"""GitHub REST client (also used for GitHub Enterprise and the sandbox forge)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from integrations.forges.base import (
    BranchAlreadyExists,
    Check,
    CheckState,
    CommitStatusState,
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
    commit_status_body,
    decode,
    newest_per_name,
    parse_status_check,
    ref_path,
    seg,
)
from integrations.http import JsonReader, Secret

DOCS = "https://docs.github.com/en/rest"


def parse_pull_request(r: JsonReader) -> PullRequest:
    """Parse a GitHub pull request object (single GET or list item)."""
    # The single GET carries `merged`; lists only carry merged_at, which then decides.
    merged_flag = r.opt_flag("merged")
    merged = merged_flag if merged_flag is not None else r.has("merged_at")
    state = r.enum("state", frozenset({"open", "closed"})) or r.fail("state", "missing")
    final: PullRequestState = "merged" if merged else ("open" if state == "open" else "closed")
    merged_by = r.opt_obj("merged_by")
    head, base = r.req_obj("head"), r.req_obj("base")
    head_repo = head.opt_obj("repo")  # null when the fork was deleted
    return PullRequest(
        number=r.req_integer("number"),
        url=r.text("html_url"),
        api_url=r.text("url"),
        state=final,
        merged=merged,
        # For open PRs merge_commit_sha is GitHub's throw-away test merge: only report real merges.
        merge_commit_sha=r.opt_text("merge_commit_sha") if merged else None,
        head_ref=head.req_text("ref"),
        head_sha=head.req_text("sha"),
        base_ref=base.req_text("ref"),
        title=r.text("title"),
        body=r.text("body"),
        author=r.obj("user").opt_text("login"),
        merged_by=merged_by.opt_text("login") if merged_by else None,
        merged_at=r.time("merged_at"),
        created_at=r.time("created_at"),
        draft=r.flag("draft"),
        labels=tuple(label.text("name") for label in r.objs("labels")),
        head_repo=head_repo.opt_text("full_name") if head_repo else None,
    )


def _parse_status(r: JsonReader) -> CommitStatusSummary:
    contexts = tuple(
        StatusContext(
            s.text("context"), s.req_text("state"), s.opt_text("description"), s.opt_text("target_url")
        )
        for s in r.objs("statuses")
    )
    return CommitStatusSummary(state=r.req_text("state"), contexts=contexts)


def _parse_posted_status(r: JsonReader) -> StatusContext:
    return StatusContext(
        r.text("context"), r.req_text("state"), r.opt_text("description"), r.opt_text("target_url")
    )


_CONCLUSIONS: dict[str, CheckState] = {
    "success": "success",
    "failure": "failure",
    "neutral": "neutral",
    "cancelled": "cancelled",
    "skipped": "skipped",
    "timed_out": "timed_out",
    "action_required": "action_required",
    "stale": "stale",
}
_STATUS_STATES: dict[str, CheckState] = {
    "success": "success",
    "failure": "failure",
    "error": "error",
    "pending": "pending",
}


def parse_check_run(r: JsonReader) -> Check:
    """Parse one check run (`checks/list-for-ref`): pending until `completed` with a conclusion."""
    conclusion = r.opt_text("conclusion")
    state: CheckState = "pending"
    if r.text("status") == "completed" and conclusion:
        state = _CONCLUSIONS.get(conclusion, "error")
    output = r.opt_obj("output")
    return Check(
        name=r.req_text("name"),
        state=state,
        source="check_run",
        url=r.opt_text("html_url") or r.opt_text("details_url"),
        description=output.opt_text("title") if output else None,
        updated_at=r.time("completed_at") or r.time("started_at"),
    )


def parse_commit_status(r: JsonReader) -> Check:
    """Parse one commit status (combined status entry or `statuses` list item)."""
    return parse_status_check(r, state_key="state", states=_STATUS_STATES)


def _parse_compare(r: JsonReader) -> Comparison:
    return Comparison(
        status=r.opt_text("status"),
        ahead_by=r.integer("ahead_by") or 0,
        behind_by=r.integer("behind_by"),
        commit_shas=tuple(c.req_text("sha") for c in r.objs("commits")),
        files=tuple(f.req_text("filename") for f in r.objs("files")),
    )


class GitHubClient(RestForge):
    """Pull requests, branches and statuses on GitHub."""

    kind = "github"
    # POST/PATCH /pulls answer 422 "body is too long (maximum is 65536 characters)" above this.
    BODY_LIMIT = 65_536

    def auth_headers(self, token: str) -> dict[str, Secret]:
        """Return the Bearer header."""
        return {"Authorization": Secret(f"Bearer {token}")}

    def default_headers(self) -> dict[str, str]:
        """Pin the media type and API version."""
        return {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}

    @property
    def _repo(self) -> str:
        owner, _, name = self.repo_full_name.partition("/")
        return f"/repos/{seg(owner)}/{seg(name)}"

    @property
    def _owner(self) -> str:
        return self.repo_full_name.partition("/")[0]

    def _pr(self, data: Any) -> PullRequest:
        return self.parse("pull request", parse_pull_request, data)

    def current_login(self) -> str:
        """Return the login of the token's user."""
        # Reference: https://docs.github.com/en/rest/users/users#get-the-authenticated-user
        return self.parse("user", lambda r: r.req_text("login"), self.call("GET", "/user"))

    # -- branches -------------------------------------------------------------------------------

    def get_branch_sha(self, branch: str) -> str | None:
        """Return the branch head SHA, or None if the branch does not exist."""
        # Reference: https://docs.github.com/en/rest/git/refs#get-a-reference
        resp = self.send("GET", f"{self._repo}/git/ref/heads/{ref_path(branch)}", ok_missing=True)
        if resp is None:
            return None
        data = decode(resp)
        if isinstance(data, list):
            # A prefix match answers with a list of refs (e.g. "feature" when "feature/x" exists).
            return None
        return self.parse("ref", lambda r: r.req_obj("object").req_text("sha"), data)

    def create_branch(self, branch: str, sha: str) -> None:
        """Create a branch at `sha`; an existing branch at the same SHA is success."""
        try:
            # Reference: https://docs.github.com/en/rest/git/refs#create-a-reference
            self.call("POST", f"{self._repo}/git/refs", body={"ref": f"refs/heads/{branch}", "sha": sha})
        except ForgeValidationError as exc:
            if "already exists" not in str(exc):
                raise
            existing = self.get_branch_sha(branch)
            if existing != sha:
                raise BranchAlreadyExists(f"branch {branch!r} exists at {existing}", sha=existing) from None

    def delete_branch(self, branch: str) -> None:
        """Delete a branch; a missing branch is success."""
        try:
            # Reference: https://docs.github.com/en/rest/git/refs#delete-a-reference
            self.send("DELETE", f"{self._repo}/git/refs/heads/{ref_path(branch)}", ok_missing=True)
        except ForgeValidationError as exc:
            if "does not exist" not in str(exc):  # 422 "Reference does not exist"
                raise

    # -- pull requests --------------------------------------------------------------------------

    def find_pull_request(self, *, head: str, base: str, state: str = "open") -> PullRequest | None:
        """Return the newest PR from `head` into `base` in `state` (open/closed/merged/all)."""
        api_state = "closed" if state == "merged" else state
        params = {"state": api_state, "head": f"{self._owner}:{head}", "base": base, "per_page": 100}
        # Reference: https://docs.github.com/en/rest/pulls/pulls#list-pull-requests
        items = self.paginate(f"{self._repo}/pulls", params)
        found = [pr for pr in map(self._pr, items) if pr.head_ref == head and pr.base_ref == base]
        if state == "merged":
            found = [pr for pr in found if pr.merged]
        return max(found, key=lambda pr: pr.number, default=None)

    def create_pull_request(
        self, *, head: str, base: str, title: str, body: str, draft: bool = False
    ) -> PullRequest:
        """Open a PR; raise PullRequestAlreadyExists on GitHub's 422 duplicate answer."""
        payload = {"head": head, "base": base, "title": title, "body": body, "draft": draft}
        try:
            # Reference: https://docs.github.com/en/rest/pulls/pulls#create-a-pull-request
            return self._pr(self.call("POST", f"{self._repo}/pulls", body=payload))
        except ForgeValidationError as exc:
            if exc.status == 422 and "already exists" in str(exc):
                raise PullRequestAlreadyExists(str(exc), status=422) from None
            raise

    def get_pull_request(self, number: int) -> PullRequest:
        """Return one PR by number."""
        # Reference: https://docs.github.com/en/rest/pulls/pulls#get-a-pull-request
        return self._pr(self.call("GET", f"{self._repo}/pulls/{int(number)}"))

    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None, state: str | None = None
    ) -> PullRequest:
        """Change title, body or state (open/closed) of a PR."""
        payload = {k: v for k, v in {"title": title, "body": body, "state": state}.items() if v is not None}
        # Reference: https://docs.github.com/en/rest/pulls/pulls#update-a-pull-request
        return self._pr(self.call("PATCH", f"{self._repo}/pulls/{int(number)}", body=payload))

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        """Add labels (by name) to a PR via the issues API."""
        if labels:
            # Reference: https://docs.github.com/en/rest/issues/labels#add-labels-to-an-issue
            self.call("POST", f"{self._repo}/issues/{int(number)}/labels", body={"labels": list(labels)})

    def request_reviewers(self, number: int, reviewers: Sequence[str]) -> None:
        """Request reviews from users (by login)."""
        if reviewers:
            # Reference: https://docs.github.com/en/rest/pulls/review-requests#request-reviewers-for-a-pull-request
            path = f"{self._repo}/pulls/{int(number)}/requested_reviewers"
            self.call("POST", path, body={"reviewers": list(reviewers)})

    def comment(self, number: int, body: str) -> None:
        """Add a conversation comment to a PR."""
        # Reference: https://docs.github.com/en/rest/issues/comments#create-an-issue-comment
        self.call("POST", f"{self._repo}/issues/{int(number)}/comments", body={"body": body})

    def merge_pull_request(
        self, number: int, *, sha: str | None = None, method: MergeMethod = "merge"
    ) -> str:
        """Merge a PR (only if its head is `sha`, when given); return the merge commit SHA."""
        payload: dict[str, str] = {"merge_method": method}
        if sha:
            payload["sha"] = sha
        try:
            # Reference: https://docs.github.com/en/rest/pulls/pulls#merge-a-pull-request
            data = self.call("PUT", f"{self._repo}/pulls/{int(number)}/merge", body=payload)
        except ForgeValidationError as exc:
            if exc.status in (405, 409):
                raise MergeNotAllowed(str(exc), status=exc.status) from None
            raise
        result = self.parse("merge answer", lambda r: (r.flag("merged"), r.opt_text("sha")), data)
        if not result[0] or not result[1]:
            raise ForgeResponseError(f"merge of PR #{number} did not report a merge commit")
        return result[1]

    # -- commits --------------------------------------------------------------------------------

    def combined_status(self, sha: str) -> CommitStatusSummary:
        """Return the combined status of a commit."""
        # Reference: https://docs.github.com/en/rest/commits/statuses#get-the-combined-status-for-a-specific-reference
        data = self.call("GET", f"{self._repo}/commits/{seg(sha)}/status", params={"per_page": 100})
        return self.parse("combined status", _parse_status, data)

    def set_commit_status(
        self, sha: str, *, state: CommitStatusState, context: str, description: str, target_url: str
    ) -> StatusContext:
        """Post a commit status (needs "Commit statuses: write"); return it as GitHub stored it."""
        body = commit_status_body(
            state=state, context=context, description=description, target_url=target_url
        )
        # Reference: https://docs.github.com/en/rest/commits/statuses#create-a-commit-status
        data = self.call("POST", f"{self._repo}/statuses/{seg(sha)}", body=body)
        return self.parse("commit status", _parse_posted_status, data)

    def checks(self, sha: str) -> tuple[Check, ...]:
        """Return the check runs and the commit statuses of a commit (GitHub counts both)."""
        runs: list[Check] = []
        # Reference: https://docs.github.com/en/rest/checks/runs#list-check-runs-for-a-git-reference
        for page in self.pages(
            f"{self._repo}/commits/{seg(sha)}/check-runs", {"filter": "latest", "per_page": 100}
        ):
            runs += self.parse(
                "check runs", lambda r: [parse_check_run(c) for c in r.objs("check_runs")], page
            )
        statuses: list[Check] = []
        # The combined status holds the newest status of each context.
        # Reference: https://docs.github.com/en/rest/commits/statuses#get-the-combined-status-for-a-specific-reference
        for page in self.pages(f"{self._repo}/commits/{seg(sha)}/status", {"per_page": 100}):
            statuses += self.parse(
                "combined status", lambda r: [parse_commit_status(s) for s in r.objs("statuses")], page
            )
        return newest_per_name([*runs, *statuses])

    def compare(self, base: str, head: str) -> Comparison:
        """Compare two refs or SHAs."""
        # Reference: https://docs.github.com/en/rest/commits/commits#compare-two-commits
        data = self.call("GET", f"{self._repo}/compare/{seg(base)}...{seg(head)}")
        return self.parse("comparison", _parse_compare, data)
