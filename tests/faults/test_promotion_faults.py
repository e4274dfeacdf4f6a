"""Opening promotion PRs while the forge, the broker and the worker misbehave: exactly one PR.

Real Celery workers on Redis, the sandbox forge (its own faults) and a fault proxy in front of it
(to stop a request at a chosen step and SIGKILL the worker right there).
"""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from promotions.models import Promotion
from promotions.services import PromotionRefused, promotion_cancel, promotion_request_create, promotions_sweep
from promotions.tasks import promotion_pr_open_task
from tests.conftest import wait_for
from tests.faults.promo import (
    approve,
    branches_like,
    envs,
    forge_faults,
    forge_repo_state,
    promotable_apps,
    pulls_from,
    request_and_approve,
    request_pushed,
    state_of,
    workers_fixture,
)

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PULLS = "/repos/acme/gitops/pulls"


@pytest.fixture
def workers(request, sandbox_inventory, workspaces_dir, purge_broker, tmp_path, settings):
    yield from workers_fixture(request, tmp_path, settings)


def _point_repository_at(url: str) -> None:
    from inventory.models import GitRepository

    GitRepository.objects.filter(name="gitops").update(
        url=f"{url}/acme/gitops.git", api_url=url, web_url=f"{url}/acme/gitops"
    )


def _branch(promotion: Promotion) -> str:
    promotion.refresh_from_db()
    assert promotion.pr_branch, "the promotion has no branch name"
    return promotion.pr_branch


def _assert_one_pr(box, promotion: Promotion) -> dict:
    wait_for(
        lambda: state_of(promotion.pk) == "pr_open", timeout=60, message=f"promotion {promotion.pk} PR open"
    )
    branch = _branch(promotion)
    pulls = pulls_from(box.forge, branch)
    assert len(pulls) == 1, f"{len(pulls)} PRs from {branch}"
    assert branches_like(box.forge, branch) == [branch]
    promotion.refresh_from_db()
    assert promotion.pr_number == pulls[0]["number"]
    from audit.models import AuditEvent

    opened = AuditEvent.objects.filter(action="promotion.pr_opened", target_id=str(promotion.pk))
    assert opened.count() == 1
    return pulls[0]


FORGE_TROUBLE = {
    "secondary-rate-limit-then-5xx": [
        {"secondary_rate_limit": {"count": 1, "retry_after": 4}, "paths": [PULLS], "methods": ["POST"]},
        {"status": 502, "count": 2, "paths": [PULLS], "methods": ["POST"]},
    ],
    "5xx-after-the-pr-was-created": [
        {"fail_after_create": True, "status": 502, "count": 1, "paths": [PULLS], "methods": ["POST"]},
    ],
}


@pytest.mark.parametrize("trouble", list(FORGE_TROUBLE))
def test_forge_errors_while_opening_the_pr_are_retried_into_exactly_one_pr(
    sandbox_inventory, people, workers, forge_proxy, trouble
):
    box = sandbox_inventory
    _point_repository_at(forge_proxy.base_url)
    forge_faults(box.forge, FORGE_TROUBLE[trouble])
    workers.start()
    app = promotable_apps(people["rm"])[0]
    promotion = request_and_approve(app, people)
    _assert_one_pr(box, promotion)

    creates = [t for t, method, path in forge_proxy.seen if method == "POST" and path == PULLS]
    if trouble.startswith("secondary"):
        assert len(creates) == 4, creates  # rate limited, 502, 502, created
        assert creates[1] - creates[0] >= 4 - 0.2, "the retry did not wait for Retry-After"
    else:
        assert len(creates) == 1, "the PR created behind a 502 was created again instead of found"
    promotion.refresh_from_db()
    assert promotion.attempts >= 2 and promotion.last_error == ""


def test_the_same_task_enqueued_five_times_at_once_opens_one_pr(sandbox_inventory, people, workers):
    box = sandbox_inventory
    app = promotable_apps(people["rm"])[0]
    promotion = request_and_approve(app, people)  # enqueues the first message on commit
    for _ in range(5):
        promotion_pr_open_task.delay(promotion.pk)
    workers.start()  # four threads take the messages together
    _assert_one_pr(box, promotion)
    wait_for(
        lambda: redis.Redis.from_url(django_settings.CELERY_BROKER_URL).llen("promote") == 0,
        timeout=30,
        message="the queue to drain",
    )
    assert state_of(promotion.pk) == "pr_open"
    assert len(pulls_from(box.forge, _branch(promotion))) == 1


def test_two_promotions_of_the_same_app_and_env_at_once_one_is_refused_with_a_link(sandbox_inventory, people):
    app = promotable_apps(people["rm"])[0]
    stage, prod = envs()
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def request(who: str) -> None:
        try:
            barrier.wait(10)
            outcomes[who] = promotion_request_create(
                actor=people[who], applications=[app], source_env=stage, target_env=prod
            )
        except PromotionRefused as exc:
            outcomes[who] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(who,)) for who in ("rm", "rm2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    created = [o for o in outcomes.values() if isinstance(o, Promotion)]
    refused = [o for o in outcomes.values() if isinstance(o, PromotionRefused)]
    assert len(created) == 1 and len(refused) == 1, outcomes
    assert refused[0].link == f"/promotions/{created[0].pk}/", refused[0].link
    assert Promotion.objects.filter(items__application=app, items__target_env=prod).count() == 1


def test_lost_broker_messages_are_re_enqueued_by_the_sweeper(sandbox_inventory, people, workers):
    box = sandbox_inventory
    app = promotable_apps(people["rm"])[0]
    promotion = request_and_approve(app, people)
    broker = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    assert broker.llen("promote") >= 1, "the approval enqueued nothing"
    broker.flushdb()  # the broker lost everything while no worker ran

    workers.start()
    assert state_of(promotion.pk) == "approved"
    # Beat runs the sweeper every SWEEP_INTERVAL_SECONDS; it acts on rows older than its grace.
    swept = promotions_sweep(now=timezone.now() + timedelta(seconds=31))
    assert swept["reopened"] == 1
    _assert_one_pr(box, promotion)


STEPS = {
    # step: (method, path pattern) where the worker is killed, the request then still reaches the forge
    "looking-up-an-earlier-pr": ("GET", r"^/repos/acme/gitops/pulls\?"),
    "looking-up-the-branch": ("GET", r"^/repos/acme/gitops/git/ref/heads/"),
    "creating-the-pr": ("POST", r"^/repos/acme/gitops/pulls$"),
    "labelling-the-pr": ("POST", r"^/repos/acme/gitops/issues/\d+/labels"),
}
ROUNDS = int(os.environ.get("FAULT_KILL_ROUNDS", "2"))  # 4 rounds x 5 steps = 20 kills


@pytest.mark.parametrize("step", list(STEPS))
def test_a_worker_killed_at_each_step_of_opening_a_pr_leaves_one_branch_and_one_pr(
    sandbox_inventory, people, workers, forge_proxy, step
):
    """SIGKILL the worker while its request for ``step`` is in flight, ROUNDS times over."""
    box = sandbox_inventory
    _point_repository_at(forge_proxy.base_url)
    method, pattern = STEPS[step]
    app = promotable_apps(people["rm"])[0]
    worker = workers.start()
    for round_ in range(ROUNDS):
        promotion = request_pushed(app, people)  # the branch is pushed at request time
        # The approval itself reads the branch head first (changes.branchcheck): let that through.
        hold = forge_proxy.hold(method, pattern, skip=1 if step == "looking-up-the-branch" else 0)
        approve(promotion, people)
        hold.wait_arrival(60)
        worker.kill()
        hold.release()  # the forge still gets the request its client died waiting for
        assert state_of(promotion.pk) == "pr_opening"

        worker = workers.start()
        # The dead worker's lease runs out (time passes), and beat's sweeper re-enqueues the work.
        Promotion.objects.filter(pk=promotion.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
        assert promotions_sweep()["reopened"] == 1
        pull = _assert_one_pr(box, promotion)
        promotion.refresh_from_db()
        # One push claim at the request (or none when the worker's won), two PR-opening claims.
        assert promotion.attempts in (2, 3), f"round {round_}: {promotion.attempts} attempts"
        assert pull["head_sha"] == promotion.pushed_head_sha  # opened from the reviewed commit

        # Free the app for the next round: cancelling closes the PR and deletes the branch.
        promotion_cancel(promotion=promotion, actor=people["rm"], reason="next round")
        wait_for(
            lambda: (
                not branches_like(box.forge, promotion.pr_branch)
                and all(p["state"] == "closed" for p in pulls_from(box.forge, promotion.pr_branch))
            ),
            timeout=30,
            message=f"PR #{pull['number']} closed and its branch deleted",
        )
    promote_branches = [b for b in forge_repo_state(box.forge)["branches"] if b.startswith("promote/")]
    assert promote_branches == []
    assert (
        len([p for p in forge_repo_state(box.forge)["pulls"] if p["head_ref"].startswith("promote/")])
        == ROUNDS
    )


def test_a_worker_killed_while_pushing_the_branch_at_request_time_recovers(
    sandbox_inventory, people, workers, forge_proxy
):
    """SIGKILL the worker while the request-time push is in flight: the sweeper finishes it, once."""
    from audit.models import AuditEvent

    box = sandbox_inventory
    _point_repository_at(forge_proxy.base_url)
    app = promotable_apps(people["rm"])[0]
    worker = workers.start()
    hold = forge_proxy.hold("POST", r"^/acme/gitops\.git/git-receive-pack")
    stage, prod = envs()
    promotion = promotion_request_create(
        actor=people["rm"], applications=[app], source_env=stage, target_env=prod
    )
    hold.wait_arrival(60)
    worker.kill()
    hold.release()  # the push still lands on the forge; nobody confirms it
    promotion.refresh_from_db()
    assert promotion.state == "requested" and promotion.branch_pushed_at is None
    assert promotion.pushed_head_sha  # recorded before the push

    workers.start()
    Promotion.objects.filter(pk=promotion.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert promotions_sweep()["repushed"] == 1
    wait_for(
        lambda: Promotion.objects.get(pk=promotion.pk).branch_pushed, timeout=60, message="push confirmed"
    )

    promotion.refresh_from_db()
    branch = promotion.pr_branch
    assert forge_repo_state(box.forge)["branches"][branch] == promotion.pushed_head_sha
    assert branches_like(box.forge, branch.rsplit("-", 1)[0]) == [branch]  # no second branch
    pushed = AuditEvent.objects.filter(action="promotion.branch_pushed", target_id=str(promotion.pk))
    assert [e.after["pushed_now"] for e in pushed] == [False]  # the dead worker's push, confirmed
    approve(promotion, people)
    pull = _assert_one_pr(box, promotion)
    assert pull["head_sha"] == promotion.pushed_head_sha
