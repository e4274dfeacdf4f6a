"""Promotion gates: each returns {name, label, passed, blocking, detail, link, transient}.

Shown in the preview, checked when the request is made and again by the task before the PR opens.

Sync-window override policy: a request may carry an override with a written justification
(at least OVERRIDE_MIN_JUSTIFICATION characters) when the requester holds the `approver` role for
the target environment and project in addition to `release_manager` (or is an admin): the person
taking the risk must be someone trusted to approve. The override is still subject to the normal
four-eyes approval, is recorded in the audit trail (`promotion.requested` with
`override_sync_window`), and such emergency changes are listed on /promotions/?override=1 for
after-the-fact review.

Zero-downtime checklist mode: `Application.strategy_options["zero_downtime"]` = "block" | "warn" |
"off"; default "block" for production-like targets, "warn" elsewhere.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from accounts.permissions import has_role, is_admin
from accounts.roles import Role
from changes.rendered import RenderedChange, rendered_verdict
from core.kustomize import KustomizationError, KustomizeImage, read_kustomization
from integrations.gitrepo import InvalidRef, validate_repo_path
from inventory.models import Application, Environment

from . import observed
from .models import PromotionBlock, PromotionItem
from .strategies import EditPlan, ImageRef, env_dir

OVERRIDE_MIN_JUSTIFICATION = 10


@dataclass(frozen=True)
class Gate:
    name: str
    label: str
    passed: bool
    blocking: bool
    detail: str
    link: str = ""
    transient: bool = False  # failed because a remote system could not be asked: retry later

    @property
    def fails(self) -> bool:
        """A failure that stops the promotion."""
        return self.blocking and not self.passed

    @property
    def badge(self) -> str:
        if self.passed:
            return "ok"
        return "bad" if self.blocking else "warn"

    @property
    def status(self) -> str:
        if self.passed:
            return "pass"
        return "fail" if self.blocking else "warning"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def failing(gates: Iterable[Gate]) -> list[Gate]:
    return [g for g in gates if g.fails]


def may_override_sync_window(user: User, application: Application, target_env: Environment) -> bool:
    """Tell whether `user` may override a closed sync window (see module docstring)."""
    if is_admin(user):
        return True
    return has_role(
        user, Role.RELEASE_MANAGER, project=application.project, environment=target_env.name
    ) and has_role(user, Role.APPROVER, project=application.project, environment=target_env.name)


# ---------------------------------------------------------------------------------------------
# Promotion-level gates


def gate_environment_order(source_env: Environment, target_env: Environment) -> Gate:
    """Refuse backwards promotions and skipped environments unless the target allows the skip."""
    label = "Environment order"
    if source_env.pk == target_env.pk:
        return Gate("environment_order", label, False, True, "source and target are the same environment")
    if target_env.order <= source_env.order:
        return Gate(
            "environment_order",
            label,
            False,
            True,
            f"{target_env.name} does not come after {source_env.name}",
        )
    between = list(
        Environment.objects.filter(order__gt=source_env.order, order__lt=target_env.order).values_list(
            "name", flat=True
        )
    )
    if not between:
        return Gate(
            "environment_order",
            label,
            True,
            True,
            f"{target_env.name} is the next environment after {source_env.name}",
        )
    if source_env.name in (target_env.allow_skip_from or []):
        return Gate(
            "environment_order",
            label,
            True,
            True,
            f"skipping {', '.join(between)} is allowed from {source_env.name}",
        )
    return Gate(
        "environment_order",
        label,
        False,
        True,
        f"promoting {source_env.name} → {target_env.name} skips {', '.join(between)}; "
        f"promote to {between[0]} first (or configure {target_env.name}.allow_skip_from)",
    )


# ---------------------------------------------------------------------------------------------
# Per-app gates


def gate_source_healthy(source: observed.EnvState, *, expected_revision: str = "") -> Gate:
    """S is Synced and Healthy on one revision on every cluster, and has been for the soak time."""
    label = f"{source.environment.name} synced and healthy"
    name = "source_healthy"
    if not source.known:
        return Gate(name, label, False, True, source.summary())
    if source.stale:
        return Gate(
            name, label, False, True, "Argo CD could not be read: " + source.summary(), transient=True
        )
    if not source.revision:
        return Gate(name, label, False, True, "clusters run different revisions: " + source.summary())
    if not source.synced or not source.healthy:
        return Gate(name, label, False, True, source.summary())
    if expected_revision and source.revision != expected_revision:
        detail = f"now at {source.revision[:8]}, the request was for {expected_revision[:8]}"
        return Gate(name, label, False, True, detail + "; request a new promotion")
    soak = source.environment.soak_minutes
    if soak:
        since = source.deployed_at
        if since is None:
            return Gate(name, label, False, True, f"deployment time unknown; {soak} min soak required")
        left = since + timedelta(minutes=soak) - timezone.now()
        if left.total_seconds() > 0:
            minutes = int(left.total_seconds() // 60) + 1
            return Gate(
                name, label, False, True, f"soaking: {minutes} more minute(s) of the {soak} min soak time"
            )
    detail = f"Synced and Healthy at {source.revision[:8]} on {len(source.apps)} cluster(s)"
    return Gate(name, label, True, True, detail + (f", soaked {soak} min" if soak else ""))


def gate_sync_window(
    application: Application,
    target_env: Environment,
    *,
    override: bool,
    override_allowed: bool,
    justification: str,
) -> Gate:
    """T's Argo CD sync windows allow a sync now, or a justified override by an allowed user."""
    label = f"{target_env.name} sync window"
    checks = observed.sync_windows(application, target_env)
    if not checks:
        return Gate(
            "sync_window",
            label,
            True,
            True,
            f"no Argo CD application of {application.name} in {target_env.name} yet",
        )
    closed = [c for c in checks if not c.can_sync]
    if not closed:
        return Gate("sync_window", label, True, True, "; ".join(f"{c.app}: {c.detail}" for c in checks))
    detail = "; ".join(f"{c.app}: {c.detail}" for c in closed)
    transient = any(c.error for c in closed)
    if override and not transient:
        if not override_allowed:
            return Gate("sync_window", label, False, True, detail + "; you may not override sync windows")
        if len(justification.strip()) < OVERRIDE_MIN_JUSTIFICATION:
            return Gate(
                "sync_window", label, False, True, detail + "; an override needs a written justification"
            )
        return Gate("sync_window", label, True, True, detail + "; OVERRIDDEN: " + justification.strip()[:300])
    return Gate("sync_window", label, False, True, detail, transient=transient)


def gate_in_flight(
    application: Application, target_env: Environment, *, exclude_promotion_id: int | None
) -> Gate:
    """No other promotion of this app into T is in flight."""
    label = "No other promotion in flight"
    items = PromotionItem.objects.filter(application=application, target_env=target_env, active=True)
    if exclude_promotion_id is not None:
        items = items.exclude(promotion_id=exclude_promotion_id)
    other = items.values_list("promotion_id", flat=True).first()
    if other is None:
        return Gate("in_flight", label, True, True, f"none for {application.name} into {target_env.name}")
    return Gate(
        "in_flight",
        label,
        False,
        True,
        f"promotion #{other} of {application.name} into {target_env.name} is still in flight",
        link=reverse("promotions:detail", args=[other]),
    )


def gate_changes(plan: EditPlan | None, error: str) -> Gate:
    label = "Something to promote"
    if plan is None:
        return Gate("changes", label, False, True, error or "the edit could not be computed")
    if not plan.changed:
        return Gate(
            "changes", label, False, True, f"the target already runs {plan.version_after or 'this content'}"
        )
    return Gate("changes", label, True, True, f"{plan.version_before or '?'} → {plan.version_after or '?'}")


def gate_rendered(changes: Iterable[RenderedChange]) -> Gate:
    """Argo CD renders every app x destination at the promotion's head; a failure blocks with its message."""
    verdict = rendered_verdict(list(changes))
    return Gate(
        "rendered",
        verdict.label,
        verdict.passed,
        True,
        verdict.detail[:2000],
        transient=verdict.transient,
    )


def gate_rendered_pending() -> Gate:
    """The rendered gate before the branch exists: evaluated once it is pushed (and again at PR time)."""
    detail = "rendered after the branch is pushed; a render failure then blocks the promotion"
    return Gate("rendered", "Rendered by Argo CD", True, True, detail)


def gate_promotion_block(
    application: Application, target_env: Environment, *, versions: Iterable[str], revision: str
) -> Gate:
    """No active PromotionBlock covers a version (or revision) this promotion would ship."""
    label = "Not blocked by a rollback"
    wanted: set[str] = set()
    for ref in versions:
        image = ImageRef.parse(ref)
        wanted.update(v for v in (ref, str(image), image.tag, image.digest, image.version) if v)
    blocks = list(PromotionBlock.objects.active().filter(application=application, environment=target_env))
    for block in blocks:
        # The version decides; a Git revision is shared by every environment of a single-branch
        # repo, so it only decides when the versions this promotion ships are unknown.
        hit = block.blocked_version in wanted or (
            not wanted and bool(block.blocked_revision) and block.blocked_revision == revision
        )
        if hit:
            detail = (
                f"{block.blocked_version} is blocked in {target_env.name} since "
                f"{timezone.localtime(block.created_at):%Y-%m-%d %H:%M}: {block.reason or 'rolled back'}; "
                "a release manager must clear the block first"
            )
            return Gate("promotion_block", label, False, True, detail, link=_block_link(block))
    return Gate(
        "promotion_block", label, True, True, f"{len(blocks)} active block(s), none for these versions"
    )


def _block_link(block: PromotionBlock) -> str:
    if block.source_type == "rollback" and block.source_id:
        try:
            return reverse("rollbacks:detail", args=[block.source_id])
        except Exception:  # rollbacks may not expose a detail page yet
            return ""
    return ""


# ---------------------------------------------------------------------------------------------
# Zero-downtime checklist (blueprint "Featured snippet"): on the manifests at S's revision.

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Rollout")
MAX_MANIFEST_FILES = 60


def zero_downtime_mode(application: Application, target_env: Environment) -> str:
    options = application.strategy_options if isinstance(application.strategy_options, dict) else {}
    mode = options.get("zero_downtime")
    if mode in ("block", "warn", "off"):
        return str(mode)
    return "block" if target_env.production_like else "warn"


def load_manifests(
    read: Callable[[str], str | None], overlay_dir: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Follow kustomization `resources:` from `overlay_dir`; return (documents, problems)."""
    yaml = YAML(typ="safe")
    docs: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: set[str] = set()
    images_pinned: list[KustomizeImage] = []

    def visit(path: str, depth: int) -> None:
        if path in seen or len(seen) >= MAX_MANIFEST_FILES or depth > 5:
            return
        seen.add(path)
        text = read(path)
        if text is None:
            kustomization = read(posixpath.join(path, "kustomization.yaml"))
            if kustomization is None:
                problems.append(f"{path} not found")
                return
            visit_kustomization(posixpath.join(path, "kustomization.yaml"), kustomization, depth)
            return
        if posixpath.basename(path) in ("kustomization.yaml", "kustomization.yml"):
            visit_kustomization(path, text, depth)
            return
        try:
            for doc in yaml.load_all(text):
                if isinstance(doc, dict):
                    docs.append(doc)
        except YAMLError:
            problems.append(f"{path} is not valid YAML")

    def visit_kustomization(path: str, text: str, depth: int) -> None:
        try:
            kustomization = read_kustomization(text)
        except KustomizationError as exc:
            problems.append(f"{path}: {exc}")
            return
        images_pinned.extend(kustomization.images)
        base = posixpath.dirname(path)
        for rel in kustomization.resources:
            if "://" in rel:
                continue
            target = posixpath.normpath(posixpath.join(base, rel))
            try:
                validate_repo_path(target)
            except InvalidRef:
                problems.append(f"resource {rel!r} leaves the repository")
                continue
            visit(target, depth + 1)

    visit(posixpath.join(overlay_dir, "kustomization.yaml"), 0)
    if images_pinned:
        docs.append({"kind": "__kustomize_images__", "images": images_pinned})
    return docs, problems


def zero_downtime_findings(docs: list[dict[str, Any]]) -> list[str]:
    """Return checklist failures (empty: all good)."""
    findings: list[str] = []
    pins: dict[str, str] = {}
    for doc in docs:
        if doc.get("kind") == "__kustomize_images__":
            for entry in doc["images"]:
                pins[entry.name] = entry.version
    workloads = [d for d in docs if d.get("kind") in WORKLOAD_KINDS]
    if not workloads:
        return ["no Deployment/StatefulSet found in the manifests"]
    if not any(d.get("kind") == "PodDisruptionBudget" for d in docs):
        findings.append("no PodDisruptionBudget")
    for workload in workloads:
        wname = f"{workload.get('kind')}/{(workload.get('metadata') or {}).get('name', '?')}"
        pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in pod.get("containers") or []:
            cname = f"{wname} container {container.get('name', '?')}"
            if not container.get("readinessProbe"):
                findings.append(f"{cname}: no readinessProbe")
            resources = container.get("resources") or {}
            if not resources.get("requests"):
                findings.append(f"{cname}: no resource requests")
            if not (resources.get("limits") or {}).get("memory"):
                findings.append(f"{cname}: no memory limit")
            image = ImageRef.parse(str(container.get("image") or ""))
            pin = pins.get(image.name)
            version = pin if pin is not None else image.version
            if not version:
                findings.append(f"{cname}: image {image.name} is not pinned to a tag or digest")
            elif version == "latest":
                findings.append(f"{cname}: image {image.name} uses the 'latest' tag")
    return findings


def gate_zero_downtime(
    application: Application,
    source_env: Environment,
    target_env: Environment,
    read_source: Callable[[str], str | None],
) -> Gate:
    label = "Zero-downtime checklist"
    mode = zero_downtime_mode(application, target_env)
    if mode == "off":
        return Gate("zero_downtime", label, True, False, "checklist disabled for this app")
    blocking = mode == "block"
    try:
        docs, problems = load_manifests(read_source, env_dir(source_env, application))
    except Exception as exc:  # a broken repo must show as a failed gate, not a crashed page
        return Gate("zero_downtime", label, False, blocking, f"manifests unreadable: {exc}")
    findings = problems + zero_downtime_findings(docs)
    if findings:
        return Gate("zero_downtime", label, False, blocking, "; ".join(findings[:12]))
    count = sum(1 for d in docs if d.get("kind") in WORKLOAD_KINDS)
    return Gate(
        "zero_downtime",
        label,
        True,
        blocking,
        f"{count} workload(s): readiness probes, resources, PDB, pinned images",
    )
