"""Build GitHub-shaped JSON objects (users, repos, pulls, commits...) from emulator state.

Shapes follow the component schemas of /work/shared/forges/github-pulls-subset.json; the contract
tests validate them with `additionalProperties: false`, so add fields only if the schema has them.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any

from .gitstore import CommitInfo, FileChange, Identity
from .state import Comment, CommitStatus, Label, Protection, Pull, Review

DOCS = "https://docs.github.com/rest"
NOREPLY_DOMAIN = "users.noreply.github.com"


def stable_id(*parts: str) -> int:
    """Deterministic numeric id, so users and repos keep their ids across restarts."""
    return zlib.crc32("/".join(parts).encode()) % 90_000_000 + 10_000_000


def node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"0:{kind}{number}".encode()).decode()


def login_from_email(email: str) -> str | None:
    """Map `123+login@users.noreply.github.com` (what the emulator commits with) back to a login."""
    local, _, domain = email.partition("@")
    if domain != NOREPLY_DOMAIN:
        return None
    return local.split("+", 1)[-1] or None


def identity_for(login: str, date: str | None = None) -> Identity:
    return Identity(login, f"{stable_id('user', login)}+{login}@{NOREPLY_DOMAIN}", date)


@dataclass(frozen=True)
class RepoRef:
    """Where a repository lives and how to spell its URLs."""

    base: str  # emulator root, e.g. http://127.0.0.1:8765
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def api(self) -> str:
        return f"{self.base}/repos/{self.owner}/{self.name}"

    @property
    def html(self) -> str:
        return f"{self.base}/{self.owner}/{self.name}"


def user(base: str, login: str) -> dict[str, Any]:
    uid = stable_id("user", login)
    api = f"{base}/users/{login}"
    return {
        "login": login,
        "id": uid,
        "node_id": node_id("User", uid),
        "avatar_url": f"{base}/avatars/{login}",
        "gravatar_id": "",
        "url": api,
        "html_url": f"{base}/{login}",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": "Bot" if login.endswith("[bot]") else "User",
        "site_admin": False,
    }


def team(base: str, org: str, slug: str) -> dict[str, Any]:
    tid = stable_id("team", org, slug)
    api = f"{base}/organizations/{stable_id('user', org)}/team/{tid}"
    return {
        "id": tid,
        "node_id": node_id("Team", tid),
        "url": api,
        "html_url": f"{base}/orgs/{org}/teams/{slug}",
        "name": slug,
        "slug": slug,
        "description": None,
        "privacy": "closed",
        "notification_setting": "notifications_enabled",
        "permission": "pull",
        "members_url": f"{api}/members{{/member}}",
        "repositories_url": f"{api}/repos",
        "parent": None,
        "type": "organization",
    }


def repository(
    ref: RepoRef, *, default_branch: str, open_issues: int, pushed_at: str | None
) -> dict[str, Any]:
    rid = stable_id("repo", ref.full_name)
    api, html = ref.api, ref.html
    return {
        "id": rid,
        "node_id": node_id("Repository", rid),
        "name": ref.name,
        "full_name": ref.full_name,
        "private": False,
        "owner": user(ref.base, ref.owner),
        "html_url": html,
        "description": None,
        "fork": False,
        "url": api,
        "archive_url": f"{api}/{{archive_format}}{{/ref}}",
        "assignees_url": f"{api}/assignees{{/user}}",
        "blobs_url": f"{api}/git/blobs{{/sha}}",
        "branches_url": f"{api}/branches{{/branch}}",
        "collaborators_url": f"{api}/collaborators{{/collaborator}}",
        "comments_url": f"{api}/comments{{/number}}",
        "commits_url": f"{api}/commits{{/sha}}",
        "compare_url": f"{api}/compare/{{base}}...{{head}}",
        "contents_url": f"{api}/contents/{{+path}}",
        "contributors_url": f"{api}/contributors",
        "deployments_url": f"{api}/deployments",
        "downloads_url": f"{api}/downloads",
        "events_url": f"{api}/events",
        "forks_url": f"{api}/forks",
        "git_commits_url": f"{api}/git/commits{{/sha}}",
        "git_refs_url": f"{api}/git/refs{{/sha}}",
        "git_tags_url": f"{api}/git/tags{{/sha}}",
        "git_url": f"{html}.git",
        "issue_comment_url": f"{api}/issues/comments{{/number}}",
        "issue_events_url": f"{api}/issues/events{{/number}}",
        "issues_url": f"{api}/issues{{/number}}",
        "keys_url": f"{api}/keys{{/key_id}}",
        "labels_url": f"{api}/labels{{/name}}",
        "languages_url": f"{api}/languages",
        "merges_url": f"{api}/merges",
        "milestones_url": f"{api}/milestones{{/number}}",
        "notifications_url": f"{api}/notifications{{?since,all,participating}}",
        "pulls_url": f"{api}/pulls{{/number}}",
        "releases_url": f"{api}/releases{{/id}}",
        "ssh_url": f"{html}.git",
        "stargazers_url": f"{api}/stargazers",
        "statuses_url": f"{api}/statuses/{{sha}}",
        "subscribers_url": f"{api}/subscribers",
        "subscription_url": f"{api}/subscription",
        "tags_url": f"{api}/tags",
        "teams_url": f"{api}/teams",
        "trees_url": f"{api}/git/trees{{/sha}}",
        "clone_url": f"{html}.git",
        "mirror_url": None,
        "hooks_url": f"{api}/hooks",
        "svn_url": html,
        "homepage": None,
        "language": None,
        "forks": 0,
        "forks_count": 0,
        "stargazers_count": 0,
        "watchers": 0,
        "watchers_count": 0,
        "size": 0,
        "default_branch": default_branch,
        "open_issues": open_issues,
        "open_issues_count": open_issues,
        "is_template": False,
        "topics": [],
        "has_issues": True,
        "has_projects": False,
        "has_wiki": False,
        "has_pages": False,
        "has_downloads": False,
        "archived": False,
        "disabled": False,
        "visibility": "public",
        "license": None,
        "pushed_at": pushed_at,
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": pushed_at,
        "permissions": {"admin": True, "maintain": True, "push": True, "triage": True, "pull": True},
        # Rebase merges need `merge-tree --merge-base` (git 2.40+), so the emulator only offers these.
        "allow_rebase_merge": False,
        "allow_squash_merge": True,
        "allow_merge_commit": True,
        "allow_auto_merge": False,
        "delete_branch_on_merge": False,
        "allow_forking": False,
        "web_commit_signoff_required": False,
    }


def label(ref: RepoRef, item: Label) -> dict[str, Any]:
    return {
        "id": item.id,
        "node_id": node_id("Label", item.id),
        "url": f"{ref.api}/labels/{item.name}",
        "name": item.name,
        # pull-request-simple types description as a plain string, so never send null.
        "description": item.description or "",
        "color": item.color,
        "default": False,
    }


def _link(href: str) -> dict[str, str]:
    return {"href": href}


@dataclass(frozen=True)
class PullContext:
    """Live facts about a pull that are not stored: git-derived numbers and the repo payload."""

    repo: dict[str, Any]
    head_sha: str
    base_sha: str
    mergeable: bool | None
    mergeable_state: str
    commits: int
    additions: int
    deletions: int
    changed_files: int


def pull(ref: RepoRef, item: Pull, ctx: PullContext, labels: list[Label], *, full: bool) -> dict[str, Any]:
    """A `pull-request` (full=True, single GET/create) or `pull-request-simple` (lists)."""
    api = f"{ref.api}/pulls/{item.number}"
    html = f"{ref.html}/pull/{item.number}"
    issue = f"{ref.api}/issues/{item.number}"
    statuses = f"{ref.api}/statuses/{ctx.head_sha}"
    owner_user = user(ref.base, ref.owner)
    data: dict[str, Any] = {
        "url": api,
        "id": item.id,
        "node_id": node_id("PullRequest", item.id),
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": issue,
        "number": item.number,
        "state": item.state,
        "locked": False,
        "title": item.title,
        "user": user(ref.base, item.user),
        "body": item.body,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "closed_at": item.closed_at,
        "merged_at": item.merged_at,
        "merge_commit_sha": item.merge_commit_sha,
        "assignee": None,
        "assignees": [],
        "requested_reviewers": [user(ref.base, login) for login in item.requested_reviewers],
        "requested_teams": [team(ref.base, ref.owner, slug) for slug in item.requested_teams],
        "labels": [label(ref, lbl) for lbl in labels],
        "milestone": None,
        "draft": item.draft,
        "commits_url": f"{api}/commits",
        "review_comments_url": f"{api}/comments",
        "review_comment_url": f"{ref.api}/pulls/comments{{/number}}",
        "comments_url": f"{issue}/comments",
        "statuses_url": statuses,
        "head": {
            "label": f"{ref.owner}:{item.head_ref}",
            "ref": item.head_ref,
            "sha": ctx.head_sha,
            "user": owner_user,
            "repo": ctx.repo,
        },
        "base": {
            "label": f"{ref.owner}:{item.base_ref}",
            "ref": item.base_ref,
            "sha": ctx.base_sha,
            "user": owner_user,
            "repo": ctx.repo,
        },
        "_links": {
            "self": _link(api),
            "html": _link(html),
            "issue": _link(issue),
            "comments": _link(f"{issue}/comments"),
            "review_comments": _link(f"{api}/comments"),
            "review_comment": _link(f"{ref.api}/pulls/comments{{/number}}"),
            "commits": _link(f"{api}/commits"),
            "statuses": _link(statuses),
        },
        "author_association": "OWNER" if item.user == ref.owner else "MEMBER",
        "auto_merge": None,
        "active_lock_reason": None,
    }
    if full:
        data.update(
            {
                "merged": item.merged,
                "mergeable": ctx.mergeable,
                "rebaseable": False,
                "mergeable_state": ctx.mergeable_state,
                "merged_by": user(ref.base, item.merged_by) if item.merged_by else None,
                "comments": len(item.comments),
                "review_comments": 0,
                "maintainer_can_modify": False,
                "commits": ctx.commits,
                "additions": ctx.additions,
                "deletions": ctx.deletions,
                "changed_files": ctx.changed_files,
            }
        )
    return data


def _git_user(who: Identity) -> dict[str, Any]:
    return {"name": who.name, "email": who.email, "date": who.date}


def _maybe_user(base: str, who: Identity) -> dict[str, Any] | None:
    login = login_from_email(who.email)
    # GitHub answers null when the email belongs to no account; so do we.
    return user(base, login) if login else None


def commit(ref: RepoRef, info: CommitInfo, files: list[FileChange] | None = None) -> dict[str, Any]:
    """A `commit` object; `files` and `stats` only for single-commit GETs, as on GitHub."""
    api = f"{ref.api}/commits/{info.sha}"
    data: dict[str, Any] = {
        "url": api,
        "sha": info.sha,
        "node_id": node_id("Commit", stable_id(info.sha)),
        "html_url": f"{ref.html}/commit/{info.sha}",
        "comments_url": f"{api}/comments",
        "commit": {
            "url": f"{ref.api}/git/commits/{info.sha}",
            "author": _git_user(info.author),
            "committer": _git_user(info.committer),
            "message": info.message,
            "comment_count": 0,
            "tree": {"sha": info.tree, "url": f"{ref.api}/git/trees/{info.tree}"},
            "verification": _unsigned(),
        },
        "author": _maybe_user(ref.base, info.author),
        "committer": _maybe_user(ref.base, info.committer),
        "parents": [
            {"sha": p, "url": f"{ref.api}/commits/{p}", "html_url": f"{ref.html}/commit/{p}"}
            for p in info.parents
        ],
    }
    if files is not None:
        adds = sum(f.additions for f in files)
        dels = sum(f.deletions for f in files)
        data["stats"] = {"additions": adds, "deletions": dels, "total": adds + dels}
        data["files"] = [diff_entry(ref, info.sha, f) for f in files]
    return data


def _unsigned() -> dict[str, Any]:
    return {"verified": False, "reason": "unsigned", "signature": None, "payload": None, "verified_at": None}


def git_commit(ref: RepoRef, info: CommitInfo) -> dict[str, Any]:
    """A `git-commit` object (the Git data API flavour)."""
    return {
        "sha": info.sha,
        "node_id": node_id("Commit", stable_id(info.sha)),
        "url": f"{ref.api}/git/commits/{info.sha}",
        "html_url": f"{ref.html}/commit/{info.sha}",
        "author": _git_user(info.author),
        "committer": _git_user(info.committer),
        "tree": {"sha": info.tree, "url": f"{ref.api}/git/trees/{info.tree}"},
        "message": info.message,
        "parents": [
            {"sha": p, "url": f"{ref.api}/git/commits/{p}", "html_url": f"{ref.html}/commit/{p}"}
            for p in info.parents
        ],
        "verification": _unsigned(),
    }


def diff_entry(ref: RepoRef, at_sha: str, change: FileChange) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sha": change.sha,
        "filename": change.filename,
        "status": change.status,
        "additions": change.additions,
        "deletions": change.deletions,
        "changes": change.additions + change.deletions,
        "blob_url": f"{ref.html}/blob/{at_sha}/{change.filename}",
        "raw_url": f"{ref.html}/raw/{at_sha}/{change.filename}",
        "contents_url": f"{ref.api}/contents/{change.filename}?ref={at_sha}",
    }
    if change.patch is not None:
        data["patch"] = change.patch
    if change.previous_filename:
        data["previous_filename"] = change.previous_filename
    return data


def git_ref(ref: RepoRef, name: str, sha: str, kind: str = "commit") -> dict[str, Any]:
    return {
        "ref": name,
        "node_id": node_id("Ref", stable_id(ref.full_name, name)),
        "url": f"{ref.api}/git/{name}",
        "object": {"type": kind, "sha": sha, "url": f"{ref.api}/git/{kind}s/{sha}"},
    }


def short_branch(ref: RepoRef, name: str, sha: str, *, protected: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "commit": {"sha": sha, "url": f"{ref.api}/commits/{sha}"},
        "protected": protected,
        "protection_url": f"{ref.api}/branches/{name}/protection",
    }


def branch(ref: RepoRef, name: str, info: CommitInfo, rule: Protection | None = None) -> dict[str, Any]:
    protection: dict[str, Any] = {
        "enabled": rule is not None,
        "required_status_checks": {
            "enforcement_level": "non_admins" if rule else "off",
            "contexts": list(rule.contexts) if rule else [],
            "checks": [{"context": c, "app_id": None} for c in (rule.contexts if rule else [])],
        },
    }
    if rule and rule.required_approvals:
        protection["required_pull_request_reviews"] = {
            "dismiss_stale_reviews": False,
            "require_code_owner_reviews": False,
            "required_approving_review_count": rule.required_approvals,
        }
    return {
        "name": name,
        "commit": commit(ref, info),
        "_links": {"self": f"{ref.api}/branches/{name}", "html": f"{ref.html}/tree/{name}"},
        "protected": rule is not None,
        "protection": protection,
        "protection_url": f"{ref.api}/branches/{name}/protection",
    }


def status(ref: RepoRef, item: CommitStatus) -> dict[str, Any]:
    return {
        "url": f"{ref.api}/statuses/{item.sha}",
        "avatar_url": f"{ref.base}/avatars/{item.creator}",
        "id": item.id,
        "node_id": node_id("StatusContext", item.id),
        "state": item.state,
        "description": item.description,
        "target_url": item.target_url,
        "context": item.context,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "creator": user(ref.base, item.creator),
    }


def simple_status(ref: RepoRef, item: CommitStatus) -> dict[str, Any]:
    data = status(ref, item)
    del data["creator"]
    data["required"] = False
    return data


def combined_status(
    ref: RepoRef, sha: str, latest: list[CommitStatus], minimal_repo: dict[str, Any]
) -> dict[str, Any]:
    states = {s.state for s in latest}
    if states & {"error", "failure"}:
        state = "failure"
    elif "pending" in states or not latest:
        state = "pending"  # GitHub says pending when nothing reported yet
    else:
        state = "success"
    return {
        "state": state,
        "statuses": [simple_status(ref, s) for s in latest],
        "sha": sha,
        "total_count": len(latest),
        "repository": minimal_repo,
        "commit_url": f"{ref.api}/commits/{sha}",
        "url": f"{ref.api}/commits/{sha}/status",
    }


def minimal_repository(full: dict[str, Any]) -> dict[str, Any]:
    keep = set(full) - {"allow_rebase_merge", "allow_squash_merge", "allow_merge_commit", "allow_auto_merge"}
    return {key: full[key] for key in keep}


def issue_comment(ref: RepoRef, number: int, item: Comment) -> dict[str, Any]:
    return {
        "id": item.id,
        "node_id": node_id("IssueComment", item.id),
        "url": f"{ref.api}/issues/comments/{item.id}",
        "html_url": f"{ref.html}/pull/{number}#issuecomment-{item.id}",
        "issue_url": f"{ref.api}/issues/{number}",
        "body": item.body,
        "user": user(ref.base, item.user),
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "author_association": "MEMBER",
    }


def review(ref: RepoRef, number: int, item: Review) -> dict[str, Any]:
    html = f"{ref.html}/pull/{number}#pullrequestreview-{item.id}"
    return {
        "id": item.id,
        "node_id": node_id("PullRequestReview", item.id),
        "user": user(ref.base, item.user),
        "body": item.body,
        "state": item.state,
        "html_url": html,
        "pull_request_url": f"{ref.api}/pulls/{number}",
        "author_association": "MEMBER",
        "_links": {"html": _link(html), "pull_request": _link(f"{ref.api}/pulls/{number}")},
        "submitted_at": item.submitted_at,
        "commit_id": item.commit_id,
    }


def content_file(ref: RepoRef, path: str, sha: str, data: bytes, at: str) -> dict[str, Any]:
    api = f"{ref.api}/contents/{path}?ref={at}"
    return {
        "type": "file",
        "encoding": "base64",
        "size": len(data),
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "content": base64.encodebytes(data).decode(),
        "sha": sha,
        "url": api,
        "git_url": f"{ref.api}/git/blobs/{sha}",
        "html_url": f"{ref.html}/blob/{at}/{path}",
        "download_url": f"{ref.html}/raw/{at}/{path}",
        "_links": {"self": api, "git": f"{ref.api}/git/blobs/{sha}", "html": f"{ref.html}/blob/{at}/{path}"},
    }


def content_entry(ref: RepoRef, path: str, kind: str, sha: str, size: int | None, at: str) -> dict[str, Any]:
    """One item of a directory listing (`content-directory`)."""
    api = f"{ref.api}/contents/{path}?ref={at}"
    gh_kind = "dir" if kind == "tree" else "submodule" if kind == "commit" else "file"
    git_url = f"{ref.api}/git/{'trees' if kind == 'tree' else 'blobs'}/{sha}"
    html = f"{ref.html}/{'tree' if kind == 'tree' else 'blob'}/{at}/{path}"
    return {
        "type": gh_kind,
        "size": size or 0,
        "name": path.rsplit("/", 1)[-1],
        "path": path,
        "sha": sha,
        "url": api,
        "git_url": git_url,
        "html_url": html,
        "download_url": f"{ref.html}/raw/{at}/{path}" if gh_kind == "file" else None,
        "_links": {"self": api, "git": git_url, "html": html},
    }
