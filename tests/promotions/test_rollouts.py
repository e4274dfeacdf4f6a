"""Promotions of an Argo Rollouts app: Healthy only once the canary completed; an abort fails it
with Argo Rollouts' message; the tracking page follows the canary (sandbox over HTTP)."""

from __future__ import annotations

import pytest
import requests
from django.urls import reverse

from inventory.liveobjects import argo_rollouts
from inventory.models import Application
from promotions import observed, services
from promotions.models import Promotion, PromotionState
from promotions.selectors import promotion_argo_apps
from tests.conftest import wait_for
from tests.promotions.helpers import make_sandbox

pytestmark = pytest.mark.django_db
S = PromotionState


@pytest.fixture
def sandbox(db, tmp_path, settings):
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    settings.WORKSPACES_DIR = tmp_path / "workspaces"
    # The last app deploys a canary; pauses of 1.5 s (5 s scaled by 0.3).
    box = make_sandbox(tmp_path, rollout_apps=1, argo_options={"rollout_time_scale": 0.3})
    yield box
    box.argo.stop()
    box.forge.stop()


def _rollout_app(sandbox) -> Application:
    spec = next(a for a in sandbox.generated.apps if a.workload == "Rollout")
    app = Application.objects.get(name=spec.name)
    if observed.env_state(app, sandbox.stage).images == observed.env_state(app, sandbox.prod).images:
        pytest.skip("the rollout app runs the same version in stage and prod")
    return app


def _merged(sandbox, users) -> Promotion:
    promotion = services.promotion_request_create(
        actor=users["rm"],
        applications=[_rollout_app(sandbox)],
        source_env=sandbox.stage,
        target_env=sandbox.prod,
    )
    services.promotion_branch_push(promotion_id=promotion.pk)
    services.promotion_approve(promotion=promotion, actor=users["approver"])
    assert services.promotion_pr_open(promotion_id=promotion.pk) == "opened"
    promotion.refresh_from_db()
    sandbox.merge(promotion.pr_number)
    return promotion


def test_a_promotion_is_healthy_only_once_the_canary_completed(sandbox, users, purge_broker, client):
    promotion = _merged(sandbox, users)
    seen: list[tuple[str, bool]] = []
    page_showed_step = []

    def healthy() -> bool:
        sandbox.reconcile()
        state = services.promotion_track(promotion_id=promotion.pk)
        [rollout] = argo_rollouts(promotion_argo_apps(promotion))[0].rollouts
        seen.append((state, rollout.complete))
        if state == S.DEPLOYED and not rollout.complete and not page_showed_step:
            client.force_login(users["viewer"])
            body = client.get(reverse("promotions:detail", args=[promotion.pk])).content.decode()
            page_showed_step.append("Argo Rollouts" in body and f"of {len(rollout.steps)}" in body)
        return state == S.HEALTHY

    wait_for(healthy, timeout=60, interval=0.2, message="promotion healthy")
    assert (S.DEPLOYED, False) in seen, "tracking saw the canary in progress"
    assert all(complete for state, complete in seen if state == S.HEALTHY)
    assert page_showed_step == [True]


def test_an_aborted_rollout_fails_the_promotion_with_argo_rollouts_message(sandbox, users, purge_broker):
    promotion = _merged(sandbox, users)

    def canary_running() -> bool:
        sandbox.reconcile()
        services.promotion_track(promotion_id=promotion.pk)
        views = argo_rollouts(promotion_argo_apps(promotion))
        return bool(views) and not views[0].rollouts[0].complete

    wait_for(canary_running, timeout=30, interval=0.1, message="canary running")
    argo_name = promotion_argo_apps(promotion)[0].name
    requests.post(
        f"{sandbox.argo.base_url}/sandbox/rollouts/{argo_name}/abort", timeout=10
    ).raise_for_status()

    def failed() -> bool:
        sandbox.reconcile()
        return services.promotion_track(promotion_id=promotion.pk) in (S.DEGRADED, S.FAILED)

    wait_for(failed, timeout=30, interval=0.2, message="promotion failed")
    promotion.refresh_from_db()
    assert promotion.state == S.DEGRADED
    assert (
        f"Rollout {promotion.items.get().application.name} aborted: RolloutAborted"
        in promotion.failure_reason
    )
