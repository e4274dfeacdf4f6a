"""Shared, idempotent pull-request machinery (promotions and rollbacks both open PRs with it).

Public API (kept stable for rollbacks/):

- `PullRequestSpec(repository, branch, base, title, body, labels=(), reviewers=(), draft=False)`
- `pull_request_ensure(*, spec, prepare_branch) -> PullRequestResult(number, url, head_sha, created, ...)`
  idempotent end to end:
    1. an open PR (or, after a crash, an already merged/closed one) for branch→base is returned;
    2. a remote branch left by an earlier attempt is reused only when its head is the commit the
       portal recorded (`spec.trust.pushed_head_sha`); otherwise the base branch head is cloned
       into a temporary `GitWorkspace`, `branch` is created there, `prepare_branch(ws)` edits and
       commits (returns the new head SHA, or None when there is nothing to change: a permanent
       error), the head is recorded (`spec.trust.record_push`) and only then pushed. A change that
       only writes files (`spec.mirror_at`: promotions) is committed on the repository's bare
       mirror instead, at the base head the forge names (`TreeWorkspace`: no clone, no checkout);
    3. the PR is created; the forge's "already exists" answer (GitHub/Gitea 422/409) means
       "look it up", never "retry"; labels and reviewers are added (both idempotent).
  Trust: a PR found by branch name is adopted only when its head repository is the target
  repository, its author is the portal's own forge identity (`forge_login`) and its head is the
  recorded commit. Anything else on the branch name (someone else's PR or push) is left alone: the
  change moves to a fresh, unguessable branch (`spec.trust.replace_branch`, audited by the caller).
- `branch_ensure(*, spec, prepare_branch) -> BranchResult(branch, head_sha, pushed)`: step 2 alone
  (the request-time push, before any approval). A branch the portal pushed is rebuilt, when lost,
  on the recorded base commit with the recorded commit date (`spec.trust`): the same SHA is pushed
  again; another SHA, or a branch or PR of the portal's now at another commit, raises `BranchMoved`
  (`foreign`: someone else's commit) and nothing is pushed or opened.
- `pull_request_refresh(repository, number) -> integrations.forges.PullRequest`
- `pull_request_close_and_delete_branch(*, repository, number, branch)`
- `MergeAttempt`, the outcome of `changes.checks.pull_request_merge_when_checks_pass` (merges only
  at the recorded head SHA, once the required checks succeeded there; never on "no checks reported").
- Errors: `PullRequestRetryable` (transient: 5xx, timeouts, rate limits, network, a git lock or
  dropped connection (`GitTransientError`), also inside `prepare_branch`; carries `retry_after`
  seconds when the forge said so) and `PullRequestPermanent` (validation 422, auth, invalid names,
  nothing to change, repository content the portal refuses (`UnsafeRepositoryContent`), also inside
  `prepare_branch`). Both subclass `PullRequestError`. Other git errors of `prepare_branch`
  (`RevertConflict`) reach the caller unchanged.
- Webhook hook: `register_pr_state_handler(fn)`; promotions/webhooks.py calls every registered
  `fn(repository, event: integrations.forges.webhooks.WebhookEvent) -> None` for each verified
  `pull_request` delivery of that repository. Rollbacks register theirs in AppConfig.ready().
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from django.conf import settings

from integrations.forges import (
    ForgeAuthError,
    ForgeClient,
    ForgeError,
    ForgeNotFound,
    ForgeResponseError,
    ForgeUnavailable,
    ForgeValidationError,
    MergeNotAllowed,
    PullRequest,
    PullRequestAlreadyExists,
    forge_client,
)
from integrations.gitrepo import (
    GitError,
    GitMirror,
    GitTransientError,
    GitWorkspace,
    InvalidRef,
    TreeWorkspace,
    UnsafeRemote,
    UnsafeRepositoryContent,
    validate_ref_name,
)

if TYPE_CHECKING:
    from integrations.forges.webhooks import WebhookEvent
    from inventory.models import GitRepository

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Errors


class PullRequestError(Exception):
    """Opening or driving a pull request failed."""


class PullRequestRetryable(PullRequestError):
    """Transient failure: try again later (after `retry_after` seconds when set)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PullRequestPermanent(PullRequestError):
    """Permanent failure: retrying cannot help; show the message to a human."""


# git stderr fragments that mean "retrying will not help".
_PERMANENT_GIT = re.compile(
    r"authentication failed|could not read username|permission denied|403|401|"
    r"repository not found|not found|does not appear to be a git repository|invalid ref|protected branch",
    re.IGNORECASE,
)


def pull_request_error(exc: ForgeError, what: str) -> PullRequestError:
    """Sort a forge failure into retryable or permanent, saying what the portal was doing."""
    return _from_forge(exc, what)


def _from_forge(exc: ForgeError, what: str) -> PullRequestError:
    if isinstance(exc, ForgeUnavailable):
        return PullRequestRetryable(f"{what}: {exc}", retry_after=exc.retry_after)
    if isinstance(exc, ForgeResponseError):
        # A truncated or garbled answer is usually a proxy hiccup: bounded retries decide.
        return PullRequestRetryable(f"{what}: {exc}")
    if isinstance(exc, ForgeAuthError):
        return PullRequestPermanent(f"{what}: the forge refused the portal's token ({exc})")
    if isinstance(exc, ForgeNotFound):
        return PullRequestPermanent(f"{what}: not found on the forge ({exc})")
    if isinstance(exc, ForgeValidationError | MergeNotAllowed):
        return PullRequestPermanent(f"{what}: {exc}")
    return PullRequestRetryable(f"{what}: {exc}")


def _from_git(exc: GitError, what: str) -> PullRequestError:
    """Sort a git failure: gitrepo's own verdict first (transient, unsafe content), then stderr."""
    if isinstance(exc, UnsafeRepositoryContent):
        return PullRequestPermanent(f"{what}: the repository content is refused: {exc}")
    if exc.retryable:
        return PullRequestRetryable(f"{what}: {exc}")
    if isinstance(exc, InvalidRef | UnsafeRemote):
        return PullRequestPermanent(f"{what}: {exc}")
    if _PERMANENT_GIT.search(str(exc)):
        return PullRequestPermanent(f"{what}: {exc}")
    return PullRequestRetryable(f"{what}: {exc}")


# ---------------------------------------------------------------------------------------------
# Types


def _no_record(sha: str, base: str) -> None:
    return None


def _no_confirm(sha: str, pushed: bool) -> None:
    return None


def _no_replace(old: str, reason: str) -> str:
    raise PullRequestPermanent(f"branch {old} holds work the portal did not make ({reason})")


class BranchMoved(PullRequestError):
    """The portal's branch (or its PR) is no longer at the commit the portal pushed.

    `foreign`: the new head `new` is a commit the portal did not make (someone pushed to the
    branch: tampered). Otherwise the portal's own rebuild of a lost branch gave `new`, a different
    commit, which was not pushed. Either way what was reviewed at `old` is not what would merge.
    """

    def __init__(self, message: str, *, old: str, new: str, foreign: bool) -> None:
        super().__init__(message)
        self.old, self.new, self.foreign = old, new, foreign


@dataclass(frozen=True)
class BranchTrust:
    """What the portal made on the PR branch, and how its owner records and moves it.

    `pushed_head_sha`: the commit the portal recorded before its last push ("" = none yet), and
    `pushed_base_sha` the commit it was built on. A lost branch is rebuilt on that base with its
    commits dated `commit_date`: the same edits then give the same SHA, else `BranchMoved`.
    `record_push(sha, base)`: store that commit on the change row; called before the push.
    `confirm_push(sha, pushed)`: the forge has the branch at `sha` (`pushed`: this call pushed it).
    `replace_branch(old, reason) -> new`: store (and audit) a fresh branch name for the change.
    """

    pushed_head_sha: str = ""
    pushed_base_sha: str = ""
    commit_date: datetime | None = None
    record_push: Callable[[str, str], None] = _no_record
    confirm_push: Callable[[str, bool], None] = _no_confirm
    replace_branch: Callable[[str, str], str] = _no_replace


@dataclass(frozen=True)
class BranchResult:
    """The branch that exists now at the portal's commit. `pushed`: this call pushed it."""

    branch: str
    head_sha: str
    pushed: bool


@dataclass(frozen=True)
class PullRequestSpec:
    """What pull request to have: `branch` → `base` of `repository`, with its text and labels.

    `body_for(head_sha)`, when given, writes the body once the branch is at `head_sha` (a body that
    summarises Argo CD's rendering of the branch needs the branch pushed first); else `body`.
    """

    repository: GitRepository
    branch: str
    base: str
    title: str
    body: str
    labels: Sequence[str] = ()
    reviewers: Sequence[str] = ()
    draft: bool = False
    trust: BranchTrust = BranchTrust()
    shallow: bool = False  # the branch's edits need no history: clone the base's head only
    body_for: Callable[[str], str] | None = None
    # Build the branch on the repository's bare mirror instead of a clone: `mirror_at(sha)` returns
    # the mirror holding commit `sha` (fetching it when missing), None when it cannot. Only for
    # changes that write files: `prepare_branch` then gets a `TreeWorkspace` (read_file,
    # write_file, commit; no work tree, no history walk, no revert).
    mirror_at: Callable[[str], GitMirror | None] | None = None


@dataclass(frozen=True)
class PullRequestResult:
    """The PR that exists now. `created` is True only for the call that opened it."""

    number: int
    url: str
    head_sha: str
    created: bool
    state: str = "open"  # open | closed | merged (a retry may find it already merged or closed)
    merge_commit_sha: str | None = None
    branch_pushed: bool = False  # this call pushed the branch (False: reused a pushed branch)
    warnings: tuple[str, ...] = ()  # e.g. a reviewer the forge would not request


@dataclass(frozen=True)
class MergeAttempt:
    """Outcome of `pull_request_merge_when_checks_pass`."""

    status: Literal["merged", "waiting", "checks_failed", "closed", "refused"]
    merge_commit_sha: str | None = None
    detail: str = ""
    merged_by: str = ""  # the forge's `merged_by` login once merged (the portal's token when it merged)


PrepareBranch = Callable[[GitWorkspace], "str | None"]
PrStateHandler = Callable[["GitRepository", "WebhookEvent"], None]
PR_STATE_HANDLERS: list[PrStateHandler] = []


def register_pr_state_handler(handler: PrStateHandler) -> None:
    """Add a handler for verified pull_request webhook events (idempotent)."""
    if handler not in PR_STATE_HANDLERS:
        PR_STATE_HANDLERS.append(handler)


# ---------------------------------------------------------------------------------------------
# Clients


def forge_for(repository: GitRepository) -> ForgeClient:
    """Build the forge client of a repository row."""
    try:
        return forge_client(
            repository.forge_kind,
            repository.api_url,
            repository.token,
            repository.full_name,
            allow_http=repository.allow_http,
        )
    except ForgeError as exc:
        raise PullRequestPermanent(f"repository {repository.name}: {exc}") from None


def _result(
    pr: PullRequest, *, created: bool, pushed: bool = False, warnings: Sequence[str] = ()
) -> PullRequestResult:
    return PullRequestResult(
        number=pr.number,
        url=pr.url,
        head_sha=pr.head_sha,
        created=created,
        state=pr.state,
        merge_commit_sha=pr.merge_commit_sha,
        branch_pushed=pushed,
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------------------------------------
# Ensure


def branch_name_unguessable(name: str) -> str:
    """Append a random suffix to a PR branch name (replacing an earlier one): `<name>-<8 hex>`."""
    return validate_ref_name(f"{_SUFFIX.sub('', name)}-{secrets.token_hex(4)}")


_SUFFIX = re.compile(r"-[0-9a-f]{8}$")
# The portal's own login per forge API, repository and token: asked once (GET /user).
_LOGINS: dict[tuple[str, str, str], str] = {}
_LOGINS_LOCK = threading.Lock()
MAX_BRANCH_REPLACEMENTS = 3


def forge_login(repository: GitRepository, forge: ForgeClient | None = None) -> str:
    """Return the login the repository's token acts as (cached per API URL, repository and token)."""
    token = hashlib.sha256((repository.token or "").encode()).hexdigest()
    key = (repository.api_url, repository.full_name, token)
    with _LOGINS_LOCK:
        if key in _LOGINS:
            return _LOGINS[key]
    try:
        login = (forge or forge_for(repository)).current_login()
    except ForgeError as exc:
        raise _from_forge(exc, "asking the forge who the portal is") from None
    with _LOGINS_LOCK:
        _LOGINS[key] = login
    return login


def pull_request_distrust(pr: PullRequest, *, repository: GitRepository, login: str, head_sha: str) -> str:
    """Say why the portal must not act on `pr` ("" when it is the portal's own PR at `head_sha`)."""
    if pr.head_repo != repository.full_name:
        return f"PR #{pr.number} comes from another repository ({pr.head_repo or 'unknown'})"
    if pr.author != login:
        return f"PR #{pr.number} was opened by {pr.author or 'unknown'}, not by the portal ({login})"
    if not head_sha or pr.head_sha != head_sha:
        return f"PR #{pr.number} head {pr.head_sha[:12]} is not the commit the portal pushed"
    return ""


def _names(spec: PullRequestSpec) -> tuple[str, str]:
    try:
        branch = validate_ref_name(spec.branch)
        base = validate_ref_name(spec.base)
    except InvalidRef as exc:
        raise PullRequestPermanent(str(exc)) from None
    if branch == base:
        raise PullRequestPermanent("the PR branch and its base must differ")
    return branch, base


def branch_ensure(*, spec: PullRequestSpec, prepare_branch: PrepareBranch) -> BranchResult:
    """Make sure the change's branch exists at the portal's commit, pushing it when missing (no PR).

    Idempotent like `pull_request_ensure`: a branch at the recorded head is reused; a branch name
    holding someone else's work before the portal pushed moves the change to a fresh branch; a
    branch the portal pushed that now holds another commit raises `BranchMoved`.
    """
    branch, base = _names(spec)
    forge = forge_for(spec.repository)
    pushed_head = spec.trust.pushed_head_sha
    for _ in range(MAX_BRANCH_REPLACEMENTS + 1):
        outcome = _branch_once(forge, spec, branch, base, pushed_head, prepare_branch)
        if isinstance(outcome, BranchResult):
            return outcome
        branch = validate_ref_name(spec.trust.replace_branch(branch, outcome))
        pushed_head = ""
    raise PullRequestPermanent(f"gave up after {MAX_BRANCH_REPLACEMENTS} foreign branches in a row")


def pull_request_ensure(*, spec: PullRequestSpec, prepare_branch: PrepareBranch) -> PullRequestResult:
    """Make sure the PR of `spec` exists, creating branch and PR only when missing.

    Work on the branch name that the portal did not make moves the change to a fresh branch
    (`spec.trust.replace_branch`) instead of being adopted; a branch or PR of the portal's that
    moved off the recorded head raises `BranchMoved` (nothing is opened on it).
    """
    branch, base = _names(spec)
    forge = forge_for(spec.repository)
    login = forge_login(spec.repository, forge)
    pushed_head = spec.trust.pushed_head_sha
    for _ in range(MAX_BRANCH_REPLACEMENTS + 1):
        distrust = _ensure_once(forge, spec, branch, base, login, pushed_head, prepare_branch)
        if isinstance(distrust, PullRequestResult):
            return distrust
        branch = validate_ref_name(spec.trust.replace_branch(branch, distrust))
        pushed_head = ""
    raise PullRequestPermanent(f"gave up after {MAX_BRANCH_REPLACEMENTS} foreign branches in a row")


def _check_moved(pr: PullRequest, *, repository: GitRepository, pushed_head: str) -> None:
    """Raise `BranchMoved` when the PR of the portal's pushed branch has another head."""
    if pushed_head and pr.head_repo == repository.full_name and pr.head_sha != pushed_head:
        raise BranchMoved(
            f"branch {pr.head_ref or '?'} moved from {pushed_head[:12]} to {pr.head_sha[:12]} "
            f"(PR #{pr.number}), a commit the portal did not make",
            old=pushed_head,
            new=pr.head_sha,
            foreign=True,
        )


def _branch_once(
    forge: ForgeClient,
    spec: PullRequestSpec,
    branch: str,
    base: str,
    pushed_head: str,
    prepare_branch: PrepareBranch,
) -> BranchResult | str:
    """The branch on `branch`: reuse what the portal pushed, or build and push it now."""
    try:
        remote_sha = forge.get_branch_sha(branch)
    except ForgeError as exc:
        raise _from_forge(exc, f"reading branch {branch}") from None
    if remote_sha is not None and remote_sha != pushed_head:
        if pushed_head:
            raise BranchMoved(
                f"branch {branch} moved from {pushed_head[:12]} to {remote_sha[:12]}, "
                "a commit the portal did not make",
                old=pushed_head,
                new=remote_sha,
                foreign=True,
            )
        return f"branch {branch} is at {remote_sha[:12]}, not at a commit the portal pushed"
    if remote_sha is None:
        try:
            head = _build_and_push(forge, spec, branch, base, prepare_branch)
        except _ForeignBranch as exc:
            return str(exc)
        return BranchResult(branch=branch, head_sha=head, pushed=True)
    spec.trust.confirm_push(remote_sha, False)
    return BranchResult(branch=branch, head_sha=remote_sha, pushed=False)


def _ensure_once(
    forge: ForgeClient,
    spec: PullRequestSpec,
    branch: str,
    base: str,
    login: str,
    pushed_head: str,
    prepare_branch: PrepareBranch,
) -> PullRequestResult | str:
    """One pass on `branch`: the PR, or why the branch holds someone else's work."""
    # (1) A PR from an earlier attempt: an open one first, else a merged/closed one.
    existing = _find_pr(forge, branch, base)
    if existing is not None:
        _check_moved(existing, repository=spec.repository, pushed_head=pushed_head)
        distrust = pull_request_distrust(
            existing, repository=spec.repository, login=login, head_sha=pushed_head
        )
        if distrust:
            return distrust
        return _finish(forge, spec, existing, created=False, pushed=False)

    # (2) The branch: reuse what an earlier attempt (or the request) pushed, or build and push it.
    outcome = _branch_once(forge, spec, branch, base, pushed_head, prepare_branch)
    if isinstance(outcome, str):
        return outcome
    pushed_head, pushed = outcome.head_sha, outcome.pushed

    # (3) The PR: a duplicate answer means a concurrent attempt won; fetch that one.
    body = spec.body_for(pushed_head) if spec.body_for is not None else spec.body
    try:
        pr = forge.create_pull_request(head=branch, base=base, title=spec.title, body=body, draft=spec.draft)
        created = True
    except PullRequestAlreadyExists:
        found = _find_pr(forge, branch, base)
        if found is None:
            raise PullRequestRetryable(
                f"the forge says a PR for {branch} exists but does not list it yet"
            ) from None
        pr, created = found, False
    except ForgeError as exc:
        raise _from_forge(exc, f"opening the pull request {branch} → {base}") from None
    _check_moved(pr, repository=spec.repository, pushed_head=pushed_head)
    distrust = pull_request_distrust(pr, repository=spec.repository, login=login, head_sha=pushed_head)
    if distrust:
        return distrust
    return _finish(forge, spec, pr, created=created, pushed=pushed)


def _find_pr(forge: ForgeClient, branch: str, base: str) -> PullRequest | None:
    try:
        return forge.find_pull_request(head=branch, base=base, state="open") or forge.find_pull_request(
            head=branch, base=base, state="all"
        )
    except ForgeError as exc:
        raise _from_forge(exc, f"looking up the pull request of {branch}") from None


def _finish(
    forge: ForgeClient, spec: PullRequestSpec, pr: PullRequest, *, created: bool, pushed: bool
) -> PullRequestResult:
    """Add labels and reviewers (both idempotent on every forge); a refused reviewer is a warning."""
    warnings: list[str] = []
    if pr.state == "open":
        missing = [label for label in spec.labels if label not in pr.labels]
        if missing:
            try:
                forge.add_labels(pr.number, missing)
            except ForgeValidationError as exc:
                warnings.append(f"labels not added: {exc}")
            except ForgeError as exc:
                raise _from_forge(exc, f"labelling PR #{pr.number}") from None
        if spec.reviewers:
            try:
                forge.request_reviewers(pr.number, list(spec.reviewers))
            except (ForgeValidationError, ForgeNotFound) as exc:
                # Typically "Reviews may only be requested from collaborators": the PR stands.
                warnings.append(f"reviewers not requested: {exc}")
            except ForgeError as exc:
                raise _from_forge(exc, f"requesting reviewers on PR #{pr.number}") from None
    return _result(pr, created=created, pushed=pushed, warnings=warnings)


def _build_and_push(
    forge: ForgeClient, spec: PullRequestSpec, branch: str, base: str, prepare_branch: PrepareBranch
) -> str:
    """Build the branch on `base`, record its head, push it; return the head.

    On the repository's mirror when the spec gives one (`mirror_at`: file edits, no clone), else on
    a fresh clone of `base`. A branch the portal pushed before (and lost) is rebuilt on the recorded
    base commit with the recorded commit date: the same SHA is pushed again, another one raises
    `BranchMoved` unpushed.
    """
    root = Path(settings.WORKSPACES_DIR)
    root.mkdir(parents=True, exist_ok=True)
    if spec.mirror_at is not None:
        ws, start = _tree_workspace(forge, spec, base, spec.mirror_at, root)
        # The contract of `mirror_at`: `prepare_branch` edits files only (see PullRequestSpec).
        head = _prepare(cast("Callable[[TreeWorkspace], str | None]", prepare_branch), ws, branch, base)
        _record_and_push(forge, spec, branch, base, start, head, lambda: ws.push(branch))
        return head
    repo, trust = spec.repository, spec.trust
    with tempfile.TemporaryDirectory(prefix=f"{repo.name}-", dir=root) as tmp:
        try:
            clone = GitWorkspace.clone(
                repo.url,
                Path(tmp) / "work",
                branch=base,
                token=repo.token or None,
                allow_http=repo.allow_http,
                committer_name=settings.GIT_COMMITTER_NAME,
                committer_email=settings.GIT_COMMITTER_EMAIL,
                max_file_bytes=settings.GIT_MAX_FILE_BYTES,
                depth=1 if spec.shallow else None,
            )
            if trust.commit_date is not None:
                clone.pin_date(trust.commit_date)
            start = clone.head()
            base_sha = trust.pushed_base_sha
            rebuild = bool(trust.pushed_head_sha and base_sha and base_sha != start)
            if rebuild and (clone.has_commit(base_sha) or (spec.shallow and clone.fetch_commit(base_sha))):
                start = base_sha
            clone.create_branch(branch, start)
        except GitError as exc:
            raise _from_git(exc, f"cloning {repo.name}@{base}") from None
        head = _prepare(prepare_branch, clone, branch, base)
        _record_and_push(forge, spec, branch, base, start, head, lambda: clone.push(branch))
    return head


def _tree_workspace(
    forge: ForgeClient,
    spec: PullRequestSpec,
    base: str,
    mirror_at: Callable[[str], GitMirror | None],
    root: Path,
) -> tuple[TreeWorkspace, str]:
    """A `TreeWorkspace` on the mirror at the forge's head of `base` (or the recorded base commit
    of a lost branch being rebuilt); the mirror fetches that commit when it lacks it."""
    trust = spec.trust
    try:
        start = forge.get_branch_sha(base)
    except ForgeError as exc:
        raise _from_forge(exc, f"reading the base branch {base}") from None
    if start is None:
        raise PullRequestPermanent(f"the base branch {base} does not exist on the forge")
    try:
        base_sha = trust.pushed_base_sha
        mirror = None
        if trust.pushed_head_sha and base_sha and base_sha != start:
            mirror = mirror_at(base_sha)
            start = base_sha if mirror is not None else start
        mirror = mirror or mirror_at(start)
        if mirror is None:
            raise PullRequestRetryable(f"the repository mirror has not got {base} at {start[:12]} yet")
        ws = TreeWorkspace(
            mirror,
            start,
            committer_name=settings.GIT_COMMITTER_NAME,
            committer_email=settings.GIT_COMMITTER_EMAIL,
            scratch=root,
        )
    except GitError as exc:
        raise _from_git(exc, f"reading {spec.repository.name}@{base} from its mirror") from None
    if trust.commit_date is not None:
        ws.pin_date(trust.commit_date)
    return ws, start


def _prepare(prepare_branch: Callable[[Any], str | None], ws: Any, branch: str, base: str) -> str:
    """Run the change's `prepare_branch`; its head, or why nothing can be pushed."""
    try:
        head = prepare_branch(ws)
    except (GitTransientError, UnsafeRepositoryContent) as exc:
        # A held lock retries with backoff; refused content fails the request; both before
        # anything was pushed. Other git errors (RevertConflict) reach the caller as they are.
        raise _from_git(exc, f"preparing {branch}") from None
    except GitError as exc:
        if isinstance(ws, TreeWorkspace):  # the mirror's own plumbing (no revert runs there)
            raise _from_git(exc, f"preparing {branch}") from None
        raise
    if head is None:
        raise PullRequestPermanent(f"nothing to change on {base}: the target already has this content")
    return head


def _record_and_push(
    forge: ForgeClient,
    spec: PullRequestSpec,
    branch: str,
    base: str,
    start: str,
    head: str,
    push: Callable[[], None],
) -> None:
    """Check the rebuilt head, record it on the change row, push it, confirm it."""
    trust, expected = spec.trust, spec.trust.pushed_head_sha
    if expected and head != expected:
        raise BranchMoved(
            f"branch {branch} is gone and rebuilding it on {start[:12]} gives {head[:12]}, "
            f"not the commit {expected[:12]} the portal pushed",
            old=expected,
            new=head,
            foreign=False,
        )
    # Recorded before the push: whatever the branch holds later is trusted only if it is this.
    trust.record_push(head, start)
    try:
        push()
    except GitError as exc:
        # A ref that appeared meanwhile (a lost race, or someone else's push) is not ours.
        try:
            remote = forge.get_branch_sha(branch)
        except ForgeError:
            remote = None
        if remote is not None and remote != head:
            raise _ForeignBranch(
                f"branch {branch} appeared at {remote[:12]} while the portal pushed"
            ) from None
        if remote != head:
            raise _from_git(exc, f"pushing {branch}") from None
    trust.confirm_push(head, True)


class _ForeignBranch(Exception):
    """The PR branch holds a commit the portal did not record (internal to `pull_request_ensure`)."""


# ---------------------------------------------------------------------------------------------
# Refresh, close, merge


def pull_request_refresh(repository: GitRepository, number: int) -> PullRequest:
    """Return the PR's current state from the forge."""
    forge = forge_for(repository)
    try:
        return forge.get_pull_request(int(number))
    except ForgeError as exc:
        raise _from_forge(exc, f"reading PR #{number}") from None


def pull_request_close_and_delete_branch(
    *, repository: GitRepository, number: int | None, branch: str, comment: str = ""
) -> PullRequest | None:
    """Close the PR if still open (optionally commenting why) and delete its branch; both idempotent."""
    forge = forge_for(repository)
    pr: PullRequest | None = None
    try:
        if number:
            pr = forge.get_pull_request(int(number))
            if pr.state == "open":
                if comment:
                    forge.comment(pr.number, comment)
                pr = forge.close_pull_request(pr.number)
        if branch:
            forge.delete_branch(validate_ref_name(branch))
    except InvalidRef as exc:
        raise PullRequestPermanent(str(exc)) from None
    except ForgeError as exc:
        raise _from_forge(exc, f"closing PR #{number}") from None
    return pr
