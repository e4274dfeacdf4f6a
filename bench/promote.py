"""Figure 5: promotion request → branch pushed, and approval → pull request opened, with a warm real worker.

The promotion branch is pushed when the promotion is requested (before approval: the approver
reviews that commit); the approval checks the branch head with the forge, then only opens the PR
from the pushed branch. The push commits the overlay edits on the portal's bare mirror of the
repository at the base head the forge names (no clone: integrations.gitrepo.TreeWorkspace) and
pushes only the new objects; Argo CD's rendering of the pushed head (the gates) and the portal's
commit status follow once the branch is recorded as pushed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .env import ROOT, BenchEnv, child_env
from .fleet import build_fleet, configure_portal, reset_inventory
from .measure import fmt_n, fmt_p, fmt_s, stats
from .report import Section, verdict


class Worker:
    """A real `celery worker` subprocess on Redis against the bench database (threads pool)."""

    def __init__(self, env: BenchEnv, log: Path, concurrency: int) -> None:
        self.env, self.log_path, self.concurrency = env, log, concurrency
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        from gitopsportal.celery import ALL_QUEUES

        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "gitopsportal", "worker", "-Q", ALL_QUEUES,
                "--pool", "threads", "--concurrency", str(self.concurrency), "--without-gossip",
                "--without-mingle", "--without-heartbeat", "-n", f"bench-{time.monotonic_ns()}@%h", "-l", "info",
            ],
            cwd=ROOT, env=child_env(self.env), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited: {self.log_path.read_text()[-2000:]}")
            if b"ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.2)
        raise RuntimeError("celery worker did not become ready in 60 s")

    def stop(self) -> None:
        import os
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()


def purge_broker() -> None:
    import redis
    from django.conf import settings

    from gitopsportal.celery import ALL_QUEUES

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    for queue in ALL_QUEUES.split(","):
        client.delete(queue)
    client.delete("unacked", "unacked_index")


def _pulls(fleet: Any) -> dict[str, Any]:
    """The forge's pull requests of acme/gitops, read in-process (no HTTP, no load on the forge)."""
    repo = fleet.forge.state.repo("acme/gitops")
    with fleet.forge.state.lock:
        return {p.head_ref: p for p in repo.pulls.values()}


def _mine(promotion_id: int) -> re.Pattern[str]:
    # Promotion branches end in "/<id>-<8 hex>" (unguessable, changes.pullrequests).
    return re.compile(rf"/{promotion_id}-[0-9a-f]{{8}}$")


def _wait_pr(fleet: Any, promotion_id: int, timeout: float) -> float:
    mine = _mine(promotion_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(mine.search(ref) for ref in _pulls(fleet)):
            return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(f"no pull request for promotion #{promotion_id} within {timeout:.0f} s")


def _wait_pushed(promotion_id: int, timeout: float) -> float:
    """Wait until the portal recorded the branch as pushed (the forge confirmed it): approvable."""
    from promotions.models import Promotion

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Promotion.objects.filter(pk=promotion_id, branch_pushed_at__isnull=False).exists():
            return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(f"promotion #{promotion_id}: branch not pushed within {timeout:.0f} s")


def promotable(fleet: Any, envs: dict[str, Any], limit: int) -> list[Any]:
    """Apps whose stage runs other images than prod (a promotion has something to change)."""
    from inventory.models import Application
    from promotions import observed

    out = []
    for spec in fleet.repo.apps:
        app = Application.objects.get(name=spec.name)
        stage = observed.env_state(app, envs["stage"])
        prod = observed.env_state(app, envs["prod"])
        if stage.images and stage.images != prod.images and stage.revision:
            out.append(app)
        if len(out) >= limit:
            break
    return out


def _task_failures(log: Path) -> Counter[str]:
    """Count the distinct errors the worker logged for failed tasks (first 110 characters)."""
    out: Counter[str] = Counter()
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if "raised unexpected:" in line:
                out[line.split("raised unexpected:", 1)[1].strip()[:110]] += 1
    return out


def run(
    section: Section,
    env: BenchEnv,
    *,
    sequential: int,
    concurrent: int,
    worker_concurrency: int,
    pr_timeout: float = 60.0,
) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import connection

    from inventory.ingest import repository_ingest
    from inventory.models import Environment
    from inventory.poll import instance_poll
    from promotions.models import Promotion
    from promotions.services import promotion_approve, promotion_request_create

    needed = sequential + concurrent + 1
    fleet = build_fleet(
        env.workdir, name="promote", argo_apps=(int(needed * 1.3) + 10) * 3, commits=400, clusters=1
    )
    worker: Worker | None = None
    try:
        reset_inventory()
        configure_portal(fleet, prod_requires_approval=True)
        Environment.objects.filter(name="prod").update(approvals_required=1)
        ingest = repository_ingest(repository_id=fleet.repository_id)
        poll = instance_poll(instance_id=fleet.instance_id)
        if not (ingest.ok and poll.ok):
            raise RuntimeError(f"sandbox inventory failed: {ingest.error or poll.error}")
        user, _ = get_user_model().objects.get_or_create(
            username="rita", defaults={"email": "rita@example.com"}
        )
        user.groups.add(Group.objects.get_or_create(name="release_manager")[0])
        approver, _ = get_user_model().objects.get_or_create(
            username="alex", defaults={"email": "alex@example.com"}
        )
        approver.groups.add(Group.objects.get_or_create(name="approver")[0])
        envs = {e.name: e for e in Environment.objects.all()}
        apps = promotable(fleet, envs, needed)
        if len(apps) < 3:
            section.row("request → branch pushed", "not measured", verdict="not measured: no promotable app")
            return
        seq_apps = apps[1 : 1 + min(sequential, (len(apps) - 1) // 2)]
        conc_apps = apps[1 + len(seq_apps) : 1 + len(seq_apps) + concurrent]

        purge_broker()
        worker = Worker(env, env.workdir / "promote-worker.log", worker_concurrency).start()

        def request(app: Any) -> int:
            promotion = promotion_request_create(
                actor=user,
                applications=[app],
                source_env=envs["stage"],
                target_env=envs["prod"],
                note="bench",
            )
            return promotion.pk

        def approve(pk: int) -> None:
            promotion = Promotion.objects.with_related().get(pk=pk)
            promotion_approve(
                promotion=promotion, actor=approver, comment="bench", head_sha=promotion.pushed_head_sha
            )

        warm_start = time.perf_counter()
        warm_pk = request(apps[0])  # warm-up: imports, the worker's first reads of the mirror
        _wait_pushed(warm_pk, 120)
        approve(warm_pk)
        _wait_pr(fleet, warm_pk, 120)
        warm_s = time.perf_counter() - warm_start

        pushed, opened, request_only, approve_only, stuck = [], [], [], [], []
        for app in seq_apps:
            start = time.perf_counter()
            pk = request(app)
            request_only.append(time.perf_counter() - start)
            try:
                pushed.append(_wait_pushed(pk, pr_timeout) - start)
                start = time.perf_counter()
                approve(pk)
                approve_only.append(time.perf_counter() - start)
                opened.append(_wait_pr(fleet, pk, pr_timeout) - start)
            except TimeoutError:
                stuck.append(pk)
        for label, values, own, own_label in (
            ("request \u2192 branch pushed", pushed, request_only, "the request itself"),
            ("approval \u2192 PR opened", opened, approve_only, "the approval itself"),
        ):
            lat = stats(values)
            section.row(
                f"{label}, {len(seq_apps)} sequential",
                f"{fmt_p(lat)} (max {fmt_s(lat.max)}, n={lat.n}); of which {own_label} {fmt_p(stats(own))}"
                + (f"; {len(stuck)} promotion(s) stuck within {pr_timeout:.0f} s" if stuck else ""),
                target="p95 < 2 s",
                verdict=verdict(
                    lat.p95 < 2 and not stuck,
                    ", ".join(
                        x
                        for x in (
                            f"p95 {lat.p95:.1f} s" if lat.p95 >= 2 else "",
                            f"{len(stuck)} stuck" if stuck else "",
                        )
                        if x
                    ),
                ),
            )

        before = set(_pulls(fleet))
        ids: list[int] = []
        errors: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(len(conc_apps))

        def one(app: Any) -> None:
            try:
                barrier.wait(30)
                pk = request(app)
                _wait_pushed(pk, pr_timeout + 2 * len(conc_apps))
                approve(pk)
                with lock:
                    ids.append(pk)
            except Exception as exc:  # reported in the table
                with lock:
                    errors.append(f"{app.name}: {type(exc).__name__}: {exc}"[:200])
            finally:
                connection.close()

        threads = [threading.Thread(target=one, args=(a,)) for a in conc_apps]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        opened_at: dict[int, float] = {}
        deadline = time.monotonic() + pr_timeout + 2 * len(ids)
        while len(opened_at) < len(ids) and time.monotonic() < deadline:
            refs = list(_pulls(fleet))
            for pk in ids:
                if pk not in opened_at and any(_mine(pk).search(ref) for ref in refs):
                    opened_at[pk] = time.perf_counter()
            time.sleep(0.01)
        total = (max(opened_at.values()) if opened_at else time.perf_counter()) - start
        time.sleep(2)  # let any duplicate attempt surface before counting
        new = {ref: p for ref, p in _pulls(fleet).items() if ref not in before}
        per_promotion = {pk: [r for r in new if _mine(pk).search(r)] for pk in ids}
        duplicated = sum(1 for refs in per_promotion.values() if len(refs) > 1)
        missing = sum(1 for refs in per_promotion.values() if not refs)
        all_open = all(len(refs) == 1 and new[refs[0]].state == "open" for refs in per_promotion.values())
        ok = not errors and len(ids) == len(conc_apps) and all_open and duplicated == 0
        section.row(
            f"{len(conc_apps)} concurrent promotions of distinct apps (request, push, approve)",
            f"{fmt_s(total)} until the last PR; {len(new)} PRs for {len(ids)} promotions, "
            f"{'all open' if all_open else f'{missing} NOT opened within the wait'}, {duplicated} duplicated"
            + (f"; {len(errors)} refused: {errors[0]}" if errors else ""),
            target="all open, none duplicated",
            verdict=verdict(ok, "see value"),
        )
        failures = _task_failures(env.workdir / "promote-worker.log")
        if failures:
            section.note(
                "Worker task failures during this figure (from its log): "
                + "; ".join(f"{n}\u00d7 {text}" for text, n in failures.most_common(3))
                + ". A task that raises an unexpected error is not retried: its promotion waits for the "
                "sweeper after the lease (CELERY_TASK_TIME_LIMIT + 30 s)."
            )
        section.note(
            f"Sandbox: {fmt_n(fleet.argo_apps)} Argo CD apps ({len(fleet.repo.apps)} apps, 1 cluster per "
            "environment) from repogen, the forge and Argo CD emulators in-process, the portal configured "
            "from config/sandbox.yaml, the repository ingested and the instance polled by the real services. "
            "Promotions go stage → prod with one approval required: the request enqueues the branch push "
            "(the commit is made on the portal's bare mirror, no clone; Argo CD renders the pushed head "
            "after it is recorded), the approval first asks the forge that the branch is still at the pushed head (one "
            "GET git/ref, in the approving request), then enqueues the PR opening, which reuses the "
            "pushed branch."
        )
        section.note(
            f"Worker: `celery -A gitopsportal worker --pool threads --concurrency {worker_concurrency}` on "
            f"Redis, warmed by one promotion first ({fmt_s(warm_start and warm_s)}). Latencies: "
            "promotion_request_create(...) called → the portal recorded the branch as pushed (the forge "
            "confirmed it; checked every 10 ms), and promotion_approve(...) called → the pull request "
            "exists in the forge emulator's state (checked in-process every 10 ms)."
        )
    finally:
        if worker is not None:
            worker.stop()
        fleet.stop()
