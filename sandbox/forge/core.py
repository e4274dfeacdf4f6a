"""Shared emulator context: repository lookup, live pull facts, and reactions to ref changes.

Every ref move (API merge, ref PATCH, contents PUT, `git push`) goes through `ForgeCore.ref_changed`
so webhooks and pull-request bookkeeping behave the same whichever way the change arrived.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import payloads
from .gitstore import BareRepo, CommitInfo
from .payloads import PullContext, RepoRef
from .routing import ApiError, not_found
from .state import CommitStatus, ForgeState, Label, Pull, RepoState, now_iso
from .webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_PUSH_COMMITS = 20  # GitHub caps the `commits` array of push payloads at 20


class ForgeCore:
    def __init__(
        self,
        repos_dir: Path,
        users: dict[str, str],
        state: ForgeState,
        webhooks: WebhookDispatcher,
    ) -> None:
        self.repos_dir = Path(repos_dir)
        self.users = users
        self.state = state
        self.webhooks = webhooks
        self.base_url = ""
        self.ci: Any = None  # the SimulatedCI, set by the app; told about every new pull request head
        self._locks: defaultdict[str, threading.RLock] = defaultdict(threading.RLock)
        self._locks_guard = threading.Lock()

    # --- lookups ----------------------------------------------------------------------------
    def repo_lock(self, full_name: str) -> threading.RLock:
        """Serialise ref-moving work per repo so before/after snapshots are attributable."""
        with self._locks_guard:
            return self._locks[full_name]

    def repo(self, owner: str, name: str) -> tuple[RepoRef, BareRepo]:
        if not (_NAME.match(owner) and _NAME.match(name)) or ".." in owner + name:
            raise not_found()
        bare = BareRepo(self.repos_dir / owner / f"{name}.git")
        if not bare.exists():
            raise not_found()
        return RepoRef(self.base_url, owner, name), bare

    def list_repos(self) -> list[tuple[str, str]]:
        found = []
        for path in sorted(self.repos_dir.glob("*/*.git")):
            if BareRepo(path).exists():
                found.append((path.parent.name, path.name.removesuffix(".git")))
        return found

    def repo_state(self, ref: RepoRef) -> RepoState:
        return self.state.repo(ref.full_name)

    def pulls(self, ref: RepoRef) -> list[Pull]:
        """A snapshot, so iterating never races a concurrent create."""
        with self.state.lock:
            return list(self.repo_state(ref).pulls.values())

    def pull(self, ref: RepoRef, number: str | int) -> Pull:
        try:
            found = self.repo_state(ref).pulls.get(int(number))
        except ValueError:
            found = None
        if found is None:
            raise not_found()
        return found

    def repo_payload(self, ref: RepoRef, bare: BareRepo) -> dict[str, Any]:
        open_count = sum(1 for p in self.pulls(ref) if p.state == "open")
        default = bare.default_branch()
        head = bare.branch_sha(default)
        info = bare.commit(head) if head else None
        pushed = info.committer.date if info else None
        return payloads.repository(ref, default_branch=default, open_issues=open_count, pushed_at=pushed)

    def commit_or_404(self, bare: BareRepo, rev: str) -> CommitInfo:
        info = bare.commit(rev)
        if info is None:
            raise ApiError(404, f"No commit found for SHA: {rev}", doc="/commits/commits#get-a-commit")
        return info

    # --- pulls ------------------------------------------------------------------------------
    def live_shas(
        self, bare: BareRepo, item: Pull, branches: dict[str, str] | None = None
    ) -> tuple[str, str]:
        """Head/base shas: live branch tips while open, frozen values once closed."""
        if item.state != "open":
            return item.head_sha, item.base_sha
        tips = branches if branches is not None else bare.branches()
        return tips.get(item.head_ref, item.head_sha), tips.get(item.base_ref, item.base_sha)

    def pull_context(self, ref: RepoRef, bare: BareRepo, item: Pull, *, full: bool) -> PullContext:
        head, base = self.live_shas(bare, item)
        repo = self.repo_payload(ref, bare)
        if not full:
            return PullContext(repo, head, base, None, "unknown", 0, 0, 0, 0)
        merge_base = bare.merge_base(base, head) or base
        files = bare.diff(merge_base, head)
        mergeable: bool | None = None
        mergeable_state = "unknown"
        if item.state == "open":
            tree, _conflicts = bare.merge_tree(base, head)
            mergeable = tree is not None
            mergeable_state = self._mergeable_state(ref, item, head, mergeable)
        return PullContext(
            repo=repo,
            head_sha=head,
            base_sha=base,
            mergeable=mergeable,
            mergeable_state=mergeable_state,
            commits=bare.count([head, f"^{base}"]),
            additions=sum(f.additions for f in files),
            deletions=sum(f.deletions for f in files),
            changed_files=len(files),
        )

    def _mergeable_state(self, ref: RepoRef, item: Pull, head: str, mergeable: bool) -> str:
        if not mergeable:
            return "dirty"
        if item.draft:
            return "draft"
        if self.merge_blockers(ref, item, head):
            return "blocked"
        latest = self.latest_statuses(ref, head)
        if any(s.state != "success" for s in latest):
            return "unstable"
        return "clean"

    def merge_blockers(self, ref: RepoRef, item: Pull, head: str) -> list[str]:
        """Why branch protection refuses the merge, worded like GitHub's 405 messages."""
        rule = self.repo_state(ref).protection.get(item.base_ref)
        if rule is None:
            return []
        reasons = []
        latest = {s.context: s.state for s in self.latest_statuses(ref, head)}
        for context in rule.contexts:
            state = latest.get(context)
            if state in ("failure", "error"):
                reasons.append(f'Required status check "{context}" is failing.')
            elif state != "success":
                reasons.append(f'Required status check "{context}" is expected.')
        verdicts: dict[str, str] = {}
        for review in item.reviews:
            if review.state in ("APPROVED", "CHANGES_REQUESTED"):
                verdicts[review.user] = review.state  # a reviewer's latest verdict counts
        approvals = sum(1 for state in verdicts.values() if state == "APPROVED")
        if "CHANGES_REQUESTED" in verdicts.values():
            reasons.append("Changes must be made through a pull request.")
        if approvals < rule.required_approvals:
            n = rule.required_approvals
            reasons.append(
                f"At least {n} approving review{'s are' if n > 1 else ' is'} required by reviewers with write access."
            )
        return reasons

    def pull_payload(self, ref: RepoRef, bare: BareRepo, item: Pull, *, full: bool = True) -> dict[str, Any]:
        ctx = self.pull_context(ref, bare, item, full=full)
        labels = self.labels_for(ref, item)
        return payloads.pull(ref, item, ctx, labels, full=full)

    def pull_list_payloads(self, ref: RepoRef, bare: BareRepo, items: list[Pull]) -> list[dict[str, Any]]:
        """`pull-request-simple` items; repo and branch tips are read once, not once per pull."""
        repo = self.repo_payload(ref, bare)
        branches = bare.branches()
        result = []
        for item in items:
            head, base = self.live_shas(bare, item, branches)
            ctx = PullContext(repo, head, base, None, "unknown", 0, 0, 0, 0)
            result.append(payloads.pull(ref, item, ctx, self.labels_for(ref, item), full=False))
        return result

    def labels_for(self, ref: RepoRef, item: Pull) -> list[Label]:
        catalog = self.repo_state(ref).labels
        return [catalog[name] for name in item.labels if name in catalog]

    def latest_statuses(self, ref: RepoRef, sha: str) -> list[CommitStatus]:
        """Newest status per context, as the combined-status endpoint reports."""
        latest: dict[str, CommitStatus] = {}
        for item in self.repo_state(ref).statuses:
            if item.sha == sha:
                latest[item.context] = item  # later entries win: the list is append-only
        return sorted(latest.values(), key=lambda s: s.context)

    def add_status(self, ref: RepoRef, sha: str, data: dict[str, Any], creator: str) -> CommitStatus:
        state = data.get("state")
        if state not in ("error", "failure", "pending", "success"):
            raise ApiError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "Status",
                        "field": "state",
                        "code": "custom",
                        "message": "state is not included in the list",
                    }
                ],
            )
        description = data.get("description")
        if isinstance(description, str) and len(description) > 140:
            # GitHub: 422 "description is too long (maximum is 140 characters)".
            raise ApiError(
                422,
                "Validation Failed",
                errors=[
                    {
                        "resource": "Status",
                        "field": "description",
                        "code": "custom",
                        "message": "description is too long (maximum is 140 characters)",
                    }
                ],
            )
        stamp = now_iso()
        item = CommitStatus(
            id=self.state.new_id(),
            sha=sha,
            state=state,
            context=str(data.get("context") or "default"),
            description=data.get("description"),
            target_url=data.get("target_url"),
            creator=creator,
            created_at=stamp,
            updated_at=stamp,
        )
        with self.state.lock:
            self.repo_state(ref).statuses.append(item)
        self.state.save()
        return item

    # --- events -----------------------------------------------------------------------------
    def emit_pull(
        self, ref: RepoRef, bare: BareRepo, item: Pull, action: str, sender: str, **extra: Any
    ) -> None:
        if action in ("opened", "reopened", "synchronize") and self.ci is not None:
            head, _base = self.live_shas(bare, item)
            info = bare.commit(head)
            self.ci.on_head(ref, head, info.message if info else "")
        if not self.webhooks.url:
            return
        payload = {
            "action": action,
            "number": item.number,
            "pull_request": self.pull_payload(ref, bare, item, full=True),
            **extra,
            "repository": self.repo_payload(ref, bare),
            "sender": payloads.user(self.base_url, sender),
        }
        self.webhooks.emit("pull_request", payload, ref.full_name)

    def ref_changed(
        self, ref: RepoRef, bare: BareRepo, refname: str, before: str | None, after: str | None, pusher: str
    ) -> None:
        """React to one ref update: push webhook, then pull-request bookkeeping."""
        try:
            self._emit_push(ref, bare, refname, before, after, pusher)
        except Exception:  # a webhook payload must never break the write that caused it
            logger.exception("building push payload for %s %s failed", ref.full_name, refname)
        if refname.startswith("refs/heads/"):
            self._update_pulls(ref, bare, refname.removeprefix("refs/heads/"), before, after, pusher)

    def _update_pulls(
        self, ref: RepoRef, bare: BareRepo, branch: str, before: str | None, after: str | None, actor: str
    ) -> None:
        for item in self.pulls(ref):
            if item.state != "open":
                continue
            if item.head_ref == branch:
                if after is None:
                    # GitHub closes a pull request whose head branch is deleted.
                    self.close_pull(ref, bare, item, actor)
                elif after != item.head_sha:
                    old = item.head_sha
                    item.head_sha, item.updated_at = after, now_iso()
                    self.state.save()
                    self.emit_pull(ref, bare, item, "synchronize", actor, before=old, after=after)
            elif item.base_ref == branch and after and bare.is_ancestor(item.head_sha, after):
                # The head landed on the base outside the merge button (e.g. a direct push): GitHub
                # marks such a pull as merged.
                self.mark_merged(ref, bare, item, after, before or after, actor)

    def close_pull(self, ref: RepoRef, bare: BareRepo, item: Pull, actor: str) -> None:
        head, base = self.live_shas(bare, item)
        stamp = now_iso()
        with self.state.lock:
            item.head_sha, item.base_sha = head, base
            item.state, item.closed_at, item.updated_at = "closed", stamp, stamp
        self.state.save()
        self.emit_pull(ref, bare, item, "closed", actor)

    def mark_merged(
        self, ref: RepoRef, bare: BareRepo, item: Pull, merge_sha: str, old_base: str, actor: str
    ) -> None:
        stamp = now_iso()
        head, _ = self.live_shas(bare, item)
        with self.state.lock:
            item.head_sha, item.base_sha = head, old_base
            item.state, item.closed_at, item.updated_at = "closed", stamp, stamp
            item.merged_at, item.merged_by, item.merge_commit_sha = stamp, actor, merge_sha
        self.state.save()
        self.emit_pull(ref, bare, item, "closed", actor)

    def _emit_push(
        self, ref: RepoRef, bare: BareRepo, refname: str, before: str | None, after: str | None, pusher: str
    ) -> None:
        if not self.webhooks.url:
            return
        commits = self._push_commits(ref, bare, refname, before, after)
        repo = self.repo_payload(ref, bare)
        # Push payloads carry epoch-second timestamps and two legacy keys (see webhooks/github-push.json).
        repo.update(
            {
                "created_at": 1704067200,
                "pushed_at": int(time.time()),
                "stargazers": 0,
                "master_branch": repo["default_branch"],
            }
        )
        zero = "0" * 40
        old, new = before or zero, after or zero
        compare = (
            f"{ref.html}/commit/{new}" if before is None else f"{ref.html}/compare/{old[:12]}...{new[:12]}"
        )
        who = payloads.identity_for(pusher)
        payload = {
            "ref": refname,
            "before": old,
            "after": new,
            "repository": repo,
            "pusher": {"name": pusher, "email": who.email},
            "sender": payloads.user(self.base_url, pusher),
            "created": before is None,
            "deleted": after is None,
            "forced": bool(before and after and not bare.is_ancestor(before, after)),
            "base_ref": None,
            "compare": compare,
            "commits": commits,
            "head_commit": commits[-1] if commits else None,
        }
        self.webhooks.emit("push", payload, ref.full_name)

    def _push_commits(
        self, ref: RepoRef, bare: BareRepo, refname: str, before: str | None, after: str | None
    ) -> list[dict[str, Any]]:
        if after is None:
            return []
        if before is not None:
            revs = [after, f"^{before}"]
        else:
            # A new branch lists only commits no other branch already had, like GitHub.
            others = [sha for name, sha in bare.refs("refs/heads/").items() if name != refname]
            revs = [after, *(f"^{sha}" for sha in others)]
        infos = bare.log(revs, limit=MAX_PUSH_COMMITS, reverse=True)
        return [self._push_commit(ref, bare, info) for info in infos]

    def _push_commit(self, ref: RepoRef, bare: BareRepo, info: CommitInfo) -> dict[str, Any]:
        changes = bare.diff(info.parents[0] if info.parents else None, info.sha)

        def person(who: Any) -> dict[str, Any]:
            data = {"name": who.name, "email": who.email}
            login = payloads.login_from_email(who.email)
            return {**data, "username": login} if login else data

        return {
            "id": info.sha,
            "tree_id": info.tree,
            "distinct": True,
            "message": info.message,
            "timestamp": info.committer.date,
            "url": f"{ref.html}/commit/{info.sha}",
            "author": person(info.author),
            "committer": person(info.committer),
            "added": [c.filename for c in changes if c.status == "added"],
            "removed": [c.filename for c in changes if c.status == "removed"],
            "modified": [c.filename for c in changes if c.status not in ("added", "removed")],
        }
