"""Promotion preview: what a promotion would do (commits, exact diff, versions) and its gates."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import User

from changes.checklist import SECRET_SCAN
from changes.rendered import RenderedChange
from changes.secretscan import BASELINE_PATH, redact_diff
from core.diffs import classify_diff
from integrations.gitrepo import InvalidRef, validate_ref_name
from inventory.carried import carried_value
from inventory.models import Application, Environment, GitRepository
from inventory.revisions import AppRevision, app_revision

from . import gates as g
from . import gitops, observed
from .models import PromotionItem
from .records import revision_label
from .strategies import EditPlan, FileReader, ImageRef, SourceState, StrategyError, env_dir, plan_edits

logger = logging.getLogger(__name__)


class PromotionRefused(Exception):
    """The request cannot go ahead; `gates` explain why, `link` points at a conflicting promotion."""

    def __init__(self, message: str, *, gates: Sequence[g.Gate] = (), link: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.gates = list(gates)
        self.link = link


class PromotionRetryLater(PromotionRefused):
    """Refused for now because a remote system could not answer (the forge): nothing was recorded,
    the same request may succeed in a moment (the API answers 503 with Retry-After)."""

    retry_after = 30


@dataclass
class ItemPreview:
    application: Application
    source: observed.EnvState
    target: observed.EnvState
    plan: EditPlan | None
    error: str
    gates: list[g.Gate]
    commits: list[gitops.ChangelogEntry] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    # The app's revision in the source (inventory.revisions) beside Argo CD's synced one.
    revision: AppRevision = field(default_factory=lambda: AppRevision(argo=""))
    target_revision_before: str = ""  # the app's revision(s) in the target

    @property
    def source_revision(self) -> str:
        """The app's revision in the source: what the records keep and the PR copies from."""
        return self.revision.shown

    @property
    def source_versions(self) -> list[str]:
        return list(self.source.images)

    @property
    def failing(self) -> list[g.Gate]:
        return g.failing(self.gates)

    @property
    def diff_lines(self) -> list[tuple[str, str]]:
        if not self.plan:
            return []
        scan = next((gate for gate in self.gates if gate.name == SECRET_SCAN), None)
        # A secret the scan found is never shown: its lines are masked in the diff on the page.
        diff = self.plan.diff if scan is None or scan.passed else redact_diff(self.plan.diff)
        return classify_diff(diff)


@dataclass
class PromotionPreview:
    source_env: Environment
    target_env: Environment
    repository: GitRepository | None
    base_sha: str
    gates: list[g.Gate]
    items: list[ItemPreview]
    override_requested: bool = False
    override_allowed: bool = False

    @property
    def all_gates(self) -> list[g.Gate]:
        return self.gates + [gate for item in self.items for gate in item.gates]

    @property
    def failing(self) -> list[g.Gate]:
        return g.failing(self.all_gates)

    @property
    def refusing(self) -> list[g.Gate]:
        """Failures that refuse the request (blocking checklist gates wait for an approver instead)."""
        return g.refusing(self.all_gates)

    @property
    def awaiting_render(self) -> list[g.Gate]:
        """Blocking checklist gates of Helm charts, evaluated once the request pushes the branch."""
        return [gate for gate in self.failing if gate.awaits_render]

    @property
    def to_override(self) -> list[g.Gate]:
        """Blocking checklist gates that failed: an approver other than the requester may override them."""
        return [gate for gate in self.failing if not gate.refuses and not gate.awaits_render]

    @property
    def ok(self) -> bool:
        return bool(self.items) and not self.failing

    @property
    def diff(self) -> str:
        return "".join(item.plan.diff for item in self.items if item.plan)

    @property
    def needs_override(self) -> bool:
        return any(
            gate.name == "sync_window" and not gate.passed and not gate.transient for gate in self.all_gates
        )


def _single_repository(applications: Sequence[Application]) -> GitRepository:
    repos = {app.repository_id for app in applications}
    if None in repos:
        missing = ", ".join(a.name for a in applications if a.repository_id is None)
        raise PromotionRefused(f"no GitOps repository is configured for {missing}")
    if len(repos) != 1:
        raise PromotionRefused("a release train must stay within one repository (one pull request)")
    repository = applications[0].repository
    assert repository is not None
    return repository


def promotion_preview(
    *,
    actor: User,
    applications: Sequence[Application],
    source_env: Environment,
    target_env: Environment,
    override: bool = False,
    justification: str = "",
    exclude_promotion_id: int | None = None,
) -> PromotionPreview:
    """Compute what a promotion would do: commits, exact diff, versions before → after, gates."""
    if not applications:
        raise PromotionRefused("choose at least one application")
    repository = _single_repository(applications)
    order_gate = g.gate_environment_order(source_env, target_env)
    try:
        base = validate_ref_name(target_env.branch)
        mirror = gitops.mirror_for(repository)
        base_sha = mirror.branch_head(base) or ""
    except InvalidRef as exc:
        raise PromotionRefused(f"bad branch for {target_env.name}: {exc}") from None
    except Exception as exc:
        logger.warning("mirror of %s unavailable: %s", repository.name, exc)
        raise PromotionRefused(f"the repository {repository.name} cannot be read right now: {exc}") from None
    if not base_sha:
        raise PromotionRefused(f"branch {target_env.branch} of {repository.name} does not exist")
    read_target = gitops.reader(mirror, base_sha)
    # Known false positives of the secret scan, as the target branch has them (untrusted data).
    baseline_text = read_target(BASELINE_PATH)
    allowed_all = all(g.may_override_sync_window(actor, app, target_env) for app in applications)
    items: list[ItemPreview] = []
    for app in applications:
        source = observed.env_state(app, source_env)
        target = observed.env_state(app, target_env)
        revision = app_revision(app, source_env, source.revision) if source.revision else AppRevision("")
        # The app's files are the same at its own revision and at Argo CD's (nothing of it changed
        # in between), so the plan reads the app's revision: the one the records keep.
        rev = revision.shown
        known_rev = bool(rev) and gitops.ensure_commit(mirror, rev)
        read_source = gitops.reader(mirror, rev) if known_rev else (lambda _path: None)
        plan: EditPlan | None = None
        error = ""
        if not rev:
            error = f"the revision {source_env.name} runs is unknown: {source.summary()}"
        elif not known_rev:
            error = f"revision {rev[:12]} that {source_env.name} runs is not in {repository.name}"
        else:
            try:
                plan = plan_edits(
                    app=app,
                    source_env=source_env,
                    target_env=target_env,
                    source=SourceState(rev, source.images, read_source),
                    read_target=read_target,
                )
            except StrategyError as exc:
                error = str(exc)
        versions = (plan.versions_after if plan else []) or list(source.images)
        item_gates = [
            g.gate_source_healthy(source),
            g.gate_sync_window(
                app, target_env, override=override, override_allowed=allowed_all, justification=justification
            ),
            g.gate_in_flight(app, target_env, exclude_promotion_id=exclude_promotion_id),
            g.gate_promotion_block(app, target_env, versions=versions, revision=source.revision),
            g.gate_changes(plan, error),
            g.gate_rendered_pending(),
        ]
        rendered: list[RenderedChange] = []  # Argo CD's rendering of the change, once its branch exists
        item_gates += g.gates_checklist(
            app, target_env, rendered=rendered, read_after=g.edited_reader(read_target, plan)
        )
        item_gates.append(g.gate_secret_scan(app, plan=plan, rendered=rendered, baseline_text=baseline_text))
        commits: list[gitops.ChangelogEntry] = []
        if known_rev:
            commits = changelog(
                mirror, repository, app, source_env, rev, plan, target_env=target_env, read_target=read_target
            )
        items.append(
            ItemPreview(
                application=app,
                source=source,
                target=target,
                plan=plan,
                error=error,
                gates=item_gates,
                commits=commits,
                paths=[e.path for e in plan.edits if e.changed] if plan else [],
                revision=revision,
                target_revision_before=revision_label(
                    app_revision(app, target_env, r).shown for r in target.revisions
                ),
            )
        )
    return PromotionPreview(
        source_env=source_env,
        target_env=target_env,
        repository=repository,
        base_sha=base_sha,
        gates=[order_gate],
        items=items,
        override_requested=override,
        override_allowed=allowed_all,
    )


def changelog(
    mirror: Any,
    repository: GitRepository,
    app: Application,
    source_env: Environment,
    revision: str,
    plan: EditPlan | None,
    item: PromotionItem | None = None,
    *,
    target_env: Environment | None = None,
    read_target: FileReader | None = None,
) -> list[gitops.ChangelogEntry]:
    """Commits of the app in the source since it last ran what the target runs now.

    With the target (`target_env`, `read_target`), only commits that change what the promotion
    carries count: a commit to the source overlay that the promotion does not copy (a stage-only
    setting beside the image pin) never reaches the target, so it is not listed.
    """
    options = app.strategy_options if isinstance(app.strategy_options, dict) else {}
    pattern = str(options.get("base_path") or getattr(repository, "base_path_pattern", "") or "apps/{app}")
    try:
        source_dir = env_dir(source_env, app)
        base_dir = pattern.format(app=app.name)
    except (StrategyError, KeyError, IndexError, ValueError):
        return []
    before = plan.versions_before if plan else (item.target_versions_before if item else [])
    markers = [_marker(v) for v in before]
    first = plan.edits[0].path if plan and plan.edits else (item.paths[0] if item and item.paths else "")
    # The edited file's counterpart in the source directory (same file name).
    source_file = f"{source_dir}/{first.rsplit('/', 1)[-1]}" if first else None
    carries = (
        _carried_by(mirror, app, source_env, target_env, read_target)
        if target_env is not None and read_target is not None
        else None
    )
    return gitops.changelog(
        mirror,
        repository,
        source_rev=revision,
        source_paths=[source_dir, base_dir],
        source_file=source_file,
        target_markers=markers,
        carries=carries,
    )


def _carried_by(
    mirror: Any, app: Application, source_env: Environment, target_env: Environment, read_target: FileReader
) -> gitops.Carries:
    """Return whether a commit changed what a promotion from the source writes into the target.

    A commit carries something when what a promotion copies out of the source (its overlay read
    at the commit, not Argo CD's report) differs from its first parent's: `inventory.carried`,
    the rule the lane and the matrix count with. It reached the target already when the plan at
    it changes nothing there.
    """
    cache: dict[str, tuple[tuple[str, str], ...] | None] = {}
    target_cache: dict[str, str | None] = {}

    def read_target_once(path: str) -> str | None:
        if path not in target_cache:
            target_cache[path] = read_target(path)
        return target_cache[path]

    def written(rev: str) -> tuple[tuple[str, str], ...] | None:
        if rev not in cache:
            try:
                plan = plan_edits(
                    app=app,
                    source_env=source_env,
                    target_env=target_env,
                    source=SourceState(rev, (), gitops.reader(mirror, rev)),
                    read_target=read_target_once,
                )
                cache[rev] = tuple((e.path, e.after) for e in plan.edits if e.changed)
            except StrategyError:
                cache[rev] = None
        return cache[rev]

    values: dict[str, str] = {}

    def value(rev: str) -> str:
        if rev not in values:
            values[rev] = carried_value(app, source_env, gitops.reader(mirror, rev))
        return values[rev]

    def carries(sha: str, parent: str | None) -> gitops.Carried:
        if written(sha) == ():
            return gitops.Carried.REACHED
        # The rule the ingest stores for the lane and the matrix (inventory.carried): one answer.
        if parent is None or value(parent) != value(sha):
            return gitops.Carried.YES
        return gitops.Carried.NO

    return carries


def _marker(version: str) -> str:
    """The pin to look for in the source file: a tag/digest, or the value of `path=value`."""
    if "=" in version and "/" not in version.split("=", 1)[0]:
        return version.split("=", 1)[1]
    ref = ImageRef.parse(version)
    return ref.digest or ref.tag or version
