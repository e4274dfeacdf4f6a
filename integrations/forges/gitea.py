"""Gitea / Forgejo REST client (api/v1)."""

from __future__ import annotations

from collections.abc import Sequence

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
    seg,
)
from integrations.http import JsonReader, Secret

DOCS = "https://docs.gitea.com/development/api-usage"
PAGE_LIMIT = 50  # common server maximum (MAX_RESPONSE_ITEMS)
DRAFT_PREFIX = "WIP: "  # Gitea marks drafts by title prefix; there is no draft flag on create


def _parse_status(r: JsonReader) -> CommitStatusSummary:
    # Gitea names the per-context field `status`, not `state`.
    contexts = tuple(
        StatusContext(
            s.text("context"), s.req_text("status"), s.opt_text("description"), s.opt_text("target_url")
        )
        for s in r.objs("statuses")
    )
    return CommitStatusSummary(state=r.text("state") or "pending", contexts=contexts)


# Gitea's CommitStatusState; `warning` does not pass a required check (only success does in Gitea).
_STATES: dict[str, CheckState] = {
    "pending": "pending",
    "success": "success",
    "error": "error",
    "failure": "failure",
    "warning": "warning",
    "skipped": "skipped",
}


def parse_commit_status(r: JsonReader) -> Check:
    """Parse one Gitea CommitStatus (Gitea Actions report through commit statuses too)."""
    return parse_status_check(r, state_key="status", states=_STATES)


def _parse_compare(r: JsonReader) -> Comparison:
    commits = r.objs("commits")
    files = {f.req_text("filename") for c in commits for f in c.objs("files")}
    return Comparison(
        status=None,
        ahead_by=r.integer("total_commits") or len(commits),
        behind_by=None,
        commit_shas=tuple(c.req_text("sha") for c in commits),
        files=tuple(sorted(files)),
    )


class GiteaClient(RestForge):
    """Pull requests, branches and statuses on Gitea/Forgejo."""

    kind = "gitea"
    # Gitea's API (CreatePullRequestOption.body) states no maximum and stores the body as LONGTEXT;
    # unknown limits in front of it (a proxy's request size, a MySQL TEXT column of an old
    # install) make GitHub's 65,536 the safe assumption.
    BODY_LIMIT = 65_536

    def auth_headers(self, token: str) -> dict[str, Secret]:
        """Return Gitea's `token` authorization header."""
        return {"Authorization": Secret(f"token {token}")}

    @property
    def _repo(self) -> str:
        owner, _, name = self.repo_full_name.partition("/")
        return f"/repos/{seg(owner)}/{seg(name)}"

    def _parse_pr(self, r: JsonReader) -> PullRequest:
        merged_flag = r.opt_flag("merged")
        merged = merged_flag if merged_flag is not None else r.has("merged_at")
        state = r.enum("state", frozenset({"open", "closed"})) or r.fail("state", "missing")
        final: PullRequestState = "merged" if merged else ("open" if state == "open" else "closed")
        head, base, merged_by = r.req_obj("head"), r.req_obj("base"), r.opt_obj("merged_by")
        head_repo = head.opt_obj("repo")  # null when the fork was deleted
        number = r.req_integer("number")
        return PullRequest(
            number=number,
            url=r.text("html_url"),
            api_url=f"{self.api_url}{self._repo}/pulls/{number}",
            state=final,
            merged=merged,
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
            draft=r.flag("draft") or r.text("title").startswith(DRAFT_PREFIX),
            labels=tuple(label.text("name") for label in r.objs("labels")),
            head_repo=head_repo.opt_text("full_name") if head_repo else None,
        )

    def _pr(self, data: object) -> PullRequest:
        return self.parse("pull request", self._parse_pr, data)

    def current_login(self) -> str:
        """Return the login of the token's user."""
        # Reference: https://docs.gitea.com/api/1.22/#tag/user/operation/userGetCurrent
        return self.parse("user", lambda r: r.req_text("login"), self.call("GET", "/user"))

    # -- branches -------------------------------------------------------------------------------

    def get_branch_sha(self, branch: str) -> str | None:
        """Return the branch head SHA, or None if the branch does not exist."""
        # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/branches/{branch}.get
        resp = self.send("GET", f"{self._repo}/branches/{seg(branch)}", ok_missing=True)
        if resp is None:
            return None
        return self.parse("branch", lambda r: r.req_obj("commit").req_text("id"), decode(resp))

    def create_branch(self, branch: str, sha: str) -> None:
        """Create a branch at `sha`; an existing branch at the same SHA is success."""
        body = {"new_branch_name": branch, "old_ref_name": sha}
        try:
            # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/branches.post
            self.call("POST", f"{self._repo}/branches", body=body)
        except ForgeValidationError as exc:
            if exc.status != 409:
                raise
            existing = self.get_branch_sha(branch)
            if existing != sha:
                raise BranchAlreadyExists(f"branch {branch!r} exists at {existing}", sha=existing) from None

    def delete_branch(self, branch: str) -> None:
        """Delete a branch; a missing branch is success."""
        # Reference: https://docs.gitea.com/api (DELETE /repos/{owner}/{repo}/branches/{branch})
        self.send("DELETE", f"{self._repo}/branches/{seg(branch)}", ok_missing=True)

    # -- pull requests --------------------------------------------------------------------------

    def find_pull_request(self, *, head: str, base: str, state: str = "open") -> PullRequest | None:
        """Return the newest PR from `head` into `base` in `state` (open/closed/merged/all)."""
        api_state = "closed" if state == "merged" else state
        # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/pulls.get
        items = self.paginate(f"{self._repo}/pulls", {"state": api_state, "limit": PAGE_LIMIT})
        found = [pr for pr in map(self._pr, items) if pr.head_ref == head and pr.base_ref == base]
        if state == "merged":
            found = [pr for pr in found if pr.merged]
        return max(found, key=lambda pr: pr.number, default=None)

    def create_pull_request(
        self, *, head: str, base: str, title: str, body: str, draft: bool = False
    ) -> PullRequest:
        """Open a PR; raise PullRequestAlreadyExists on Gitea's 409 duplicate answer."""
        payload = {
            "head": head,
            "base": base,
            "title": (DRAFT_PREFIX + title) if draft else title,
            "body": body,
        }
        try:
            # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/pulls.post
            return self._pr(self.call("POST", f"{self._repo}/pulls", body=payload))
        except ForgeValidationError as exc:
            if exc.status == 409:
                raise PullRequestAlreadyExists(str(exc), status=409) from None
            raise

    def get_pull_request(self, number: int) -> PullRequest:
        """Return one PR by number."""
        # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/pulls/{index}.get
        return self._pr(self.call("GET", f"{self._repo}/pulls/{int(number)}"))

    def update_pull_request(
        self, number: int, *, title: str | None = None, body: str | None = None, state: str | None = None
    ) -> PullRequest:
        """Change title, body or state (open/closed) of a PR."""
        payload = {k: v for k, v in {"title": title, "body": body, "state": state}.items() if v is not None}
        # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/pulls/{index}.patch
        return self._pr(self.call("PATCH", f"{self._repo}/pulls/{int(number)}", body=payload))

    def _label_ids(self, names: Sequence[str]) -> list[int]:
        # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/labels.get
        known = {
            label.text("name"): label.req_integer("id")
            for label in self.parse_many(
                "labels", lambda r: r, list(self.paginate(f"{self._repo}/labels", {"limit": PAGE_LIMIT}))
            )
        }
        missing = [n for n in names if n not in known]
        if missing:
            raise ForgeValidationError(
                f"gitea: unknown labels {', '.join(missing)} (create them in the repository)"
            )
        return [known[n] for n in names]

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        """Add labels (resolved from names to ids) to a PR."""
        if labels:
            ids = self._label_ids(labels)
            # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/issues/{index}/labels.post
            self.call("POST", f"{self._repo}/issues/{int(number)}/labels", body={"labels": ids})

    def request_reviewers(self, number: int, reviewers: Sequence[str]) -> None:
        """Request reviews from users (by login)."""
        if reviewers:
            path = f"{self._repo}/pulls/{int(number)}/requested_reviewers"
            # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/pulls/{index}/requested_reviewers.post
            self.call("POST", path, body={"reviewers": list(reviewers)})

    def comment(self, number: int, body: str) -> None:
        """Add a comment to a PR."""
        # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/issues/{index}/comments.post
        self.call("POST", f"{self._repo}/issues/{int(number)}/comments", body={"body": body})

    def merge_pull_request(
        self, number: int, *, sha: str | None = None, method: MergeMethod = "merge"
    ) -> str:
        """Merge a PR; Gitea answers with an empty body, so re-read the PR for the merge SHA."""
        payload: dict[str, str] = {"Do": method}
        if sha:
            payload["head_commit_id"] = sha
        try:
            # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/pulls/{index}/merge.post
            self.call("POST", f"{self._repo}/pulls/{int(number)}/merge", body=payload)
        except ForgeValidationError as exc:
            if exc.status in (405, 409):
                raise MergeNotAllowed(str(exc), status=exc.status) from None
            raise
        merged = self.get_pull_request(number)
        if not merged.merged or not merged.merge_commit_sha:
            raise ForgeResponseError(f"gitea: PR #{number} is not reported merged after the merge call")
        return merged.merge_commit_sha

    # -- commits --------------------------------------------------------------------------------

    def combined_status(self, sha: str) -> CommitStatusSummary:
        """Return the combined status of a commit."""
        # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/commits/{ref}/status.get
        data = self.call("GET", f"{self._repo}/commits/{seg(sha)}/status", params={"limit": PAGE_LIMIT})
        return self.parse("combined status", _parse_status, data)

    def set_commit_status(
        self, sha: str, *, state: CommitStatusState, context: str, description: str, target_url: str
    ) -> StatusContext:
        """Post a commit status (CreateStatusOption; the token needs repository write)."""
        body = commit_status_body(
            state=state, context=context, description=description, target_url=target_url
        )
        # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/statuses/{sha}.post
        data = self.call("POST", f"{self._repo}/statuses/{seg(sha)}", body=body)
        # Gitea answers with a CommitStatus, whose state field is named `status`.
        return self.parse(
            "commit status",
            lambda r: StatusContext(
                r.text("context"), r.req_text("status"), r.opt_text("description"), r.opt_text("target_url")
            ),
            data,
        )

    def checks(self, sha: str) -> tuple[Check, ...]:
        """Return the newest commit status of each context at a commit."""
        found: list[Check] = []
        # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/commits/{ref}/status.get
        for page in self.pages(f"{self._repo}/commits/{seg(sha)}/status", {"limit": PAGE_LIMIT}):
            found += self.parse(
                "combined status", lambda r: [parse_commit_status(s) for s in r.objs("statuses")], page
            )
        return newest_per_name(found)

    def compare(self, base: str, head: str) -> Comparison:
        """Compare two refs or SHAs."""
        # Reference: gitea-pulls-subset.json paths./repos/{owner}/{repo}/compare/{basehead}.get
        data = self.call("GET", f"{self._repo}/compare/{seg(base)}...{seg(head)}")
        return self.parse("comparison", _parse_compare, data)
