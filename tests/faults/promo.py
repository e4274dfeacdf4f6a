"""Helpers of the promotion fault tests: approved promotions, forge inspection, worker processes."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connections

from tests.conftest import WorkerProcess
from tests.e2e.harness import ARTIFACTS


@dataclass
class Workers:
    """Real Celery workers, started and killed on demand, sharing the test's directories."""

    log_dir: Path
    env: dict[str, str]
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self) -> WorkerProcess:
        worker = WorkerProcess(self.log_dir / f"worker-{len(self.started)}.log", extra_env=self.env)
        self.started.append(worker)
        return worker.start()

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()

    def save_logs(self, label: str) -> None:
        target = ARTIFACTS / "faults" / label
        target.mkdir(parents=True, exist_ok=True)
        for worker in self.started:
            if worker.log_path.exists():
                shutil.copy2(worker.log_path, target / worker.log_path.name)


def workers_fixture(request, tmp_path: Path, settings) -> Iterator[Workers]:
    workers = Workers(
        tmp_path,
        {
            "GITOPSPORTAL_MIRRORS_DIR": str(settings.MIRRORS_DIR),
            "GITOPSPORTAL_WORKSPACES_DIR": str(settings.WORKSPACES_DIR),
        },
    )
    yield workers
    workers.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        workers.save_logs(request.node.name)
    connections.close_all()


def envs() -> tuple[Any, Any]:
    from inventory.models import Environment

    return Environment.objects.get(name="stage"), Environment.objects.get(name="prod")


def promotable_apps(actor: Any) -> list[Any]:
    """Applications whose stage→prod promotion passes every gate now."""
    from inventory.models import Application
    from promotions.services import PromotionRefused, promotion_preview

    stage, prod = envs()
    found = []
    for app in Application.objects.order_by("name"):
        try:
            preview = promotion_preview(actor=actor, applications=[app], source_env=stage, target_env=prod)
        except PromotionRefused:
            continue
        if not preview.failing:
            found.append(app)
    if not found:
        pytest.skip("the sandbox has no app to promote from stage to prod")
    return found


def request_pushed(app: Any, people: dict[str, Any]) -> Any:
    """Request stage→prod for ``app`` and make sure its branch is pushed (before any approval).

    Pushed in-process; a running worker may take the request's own push message first (the claim
    decides), then we wait for it.
    """
    from promotions.models import Promotion
    from promotions.services import promotion_branch_push, promotion_request_create
    from tests.conftest import wait_for

    stage, prod = envs()
    promotion = promotion_request_create(
        actor=people["rm"], applications=[app], source_env=stage, target_env=prod, note="fault test"
    )
    promotion_branch_push(promotion_id=promotion.pk)
    wait_for(
        lambda: Promotion.objects.get(pk=promotion.pk).branch_pushed,
        timeout=60,
        message=f"promotion {promotion.pk} branch pushed",
    )
    promotion.refresh_from_db()
    return promotion


def approve(promotion: Any, people: dict[str, Any]) -> Any:
    """Approve the pushed head: the PR task is enqueued on commit."""
    from promotions.services import promotion_approve

    return promotion_approve(
        promotion=promotion, actor=people["approver"], comment="ok", head_sha=promotion.pushed_head_sha
    )


def request_and_approve(app: Any, people: dict[str, Any]) -> Any:
    """Request stage→prod for ``app``, push its branch and approve it: the PR task is enqueued on commit."""
    return approve(request_pushed(app, people), people)


def forge_repo_state(forge: Any) -> dict[str, Any]:
    state = requests.get(f"{forge.base_url}/sandbox/state", timeout=10).json()
    return state["repos"]["acme/gitops"]


def pulls_from(forge: Any, branch: str) -> list[dict[str, Any]]:
    return [p for p in forge_repo_state(forge)["pulls"] if p["head_ref"] == branch]


def branches_like(forge: Any, prefix: str) -> list[str]:
    return [b for b in forge_repo_state(forge)["branches"] if b.startswith(prefix)]


def forge_faults(forge: Any, faults: list[dict[str, Any]]) -> None:
    requests.post(f"{forge.base_url}/sandbox/faults", json=faults, timeout=10).raise_for_status()


def state_of(promotion_id: int) -> str:
    from promotions.models import Promotion

    return Promotion.objects.filter(pk=promotion_id).values_list("state", flat=True).get()
