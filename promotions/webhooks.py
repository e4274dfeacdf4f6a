"""Forge webhooks: POST /webhooks/forge/<repository name>/.

The signature is verified on the raw body, in constant time, with the repository's
`webhook_secret` (else settings.FORGE_WEBHOOK_SECRET) before anything is parsed; an unsigned or
badly signed delivery gets 403 and is recorded as `webhook.rejected`, aggregated per client
address and minute (audit.aggregate: the count of rejections is the sum of the events'
`after["count"]`), so unauthenticated callers cannot grow the ledger one row per request.
A delivery id (X-GitHub-Delivery, X-Gitea-Delivery, X-Gitlab-Event-UUID) seen before within
FORGE_WEBHOOK_DEDUPE_SECONDS answers 200 "duplicate" and does nothing: a captured, validly signed
delivery cannot be replayed to drive tracking again. `pull_request` events drive promotion tracking and every handler registered with
`changes.pullrequests.register_pr_state_handler` (rollbacks); `push` events
enqueue the repository's Git ingest and, for a change's branch moved off the portal's recorded
head, its branch check with the forge (changes.branchcheck); CI events (`status`, `check_run`, `check_suite`, GitLab
pipeline and job hooks) track the open PRs of every kind at that head (their checks).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from audit.aggregate import audit_event_record_aggregated
from changes.branchcheck import changes_branch_pushed_webhook
from changes.checks import changes_track_head
from changes.lifecycle import change_enqueue_track
from changes.pullrequests import PR_STATE_HANDLERS
from integrations.forges.webhooks import WebhookEvent, WebhookPayloadError, parse_webhook, verify_signature
from inventory.models import GitRepository
from inventory.tasks import repository_ingest_task

from .kind import PROMOTION
from .models import TRACKED_STATES, Promotion

logger = logging.getLogger(__name__)
MAX_BODY = 5 * 1024 * 1024
FOLLOW_AFTER_MERGE = 60  # polls, every few seconds: ~5 minutes of close tracking after a merge


def _reject(request: HttpRequest, name: str, status: int, reason: str) -> JsonResponse:
    audit_event_record_aggregated(
        action="webhook.rejected",
        target_type="repository",
        target_id=name[:200],
        target_label=f"forge webhook for {name}"[:300],
        message=reason,
        system_name="webhooks",
    )
    return JsonResponse({"error": reason}, status=status)


@csrf_exempt
@require_POST
def forge_webhook(request: HttpRequest, repository: str) -> JsonResponse:
    repo = GitRepository.objects.filter(name=repository).first()
    if repo is None:
        return _reject(request, repository, 404, "unknown repository")
    body = request.body
    if len(body) > MAX_BODY:
        return _reject(request, repo.name, 413, "payload too large")
    secret = (repo.webhook_secret or settings.FORGE_WEBHOOK_SECRET or "").encode()
    if not secret:
        return _reject(
            request, repo.name, 403, "no webhook secret configured: unsigned deliveries are refused"
        )
    kind = repo.forge_kind
    if not verify_signature(kind, secret, request.headers, body):
        return _reject(request, repo.name, 403, "missing or invalid signature")
    try:
        event = parse_webhook(kind, request.headers, body)
    except WebhookPayloadError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    if event.repo_full_name and event.repo_full_name.lower() != repo.full_name.lower():
        return JsonResponse({"error": "the delivery is for another repository"}, status=400)
    seen_key = f"forge-webhook-delivery:{repo.pk}:{event.delivery_id}"[:250] if event.delivery_id else ""
    # cache.add is an atomic SET NX on Redis: of two concurrent replays only one goes on.
    if seen_key and not cache.add(seen_key, 1, timeout=settings.FORGE_WEBHOOK_DEDUPE_SECONDS):
        return JsonResponse({"ok": True, "duplicate": True, "event": event.kind}, status=200)
    try:
        handled = _handle(repo, event)
    except BaseException:
        if seen_key:
            cache.delete(seen_key)  # not handled: the forge's redelivery must go through
        raise
    return JsonResponse({"ok": True, **handled}, status=202)


def _handle(repo: GitRepository, event: WebhookEvent) -> dict[str, object]:
    handled: dict[str, object] = {"event": event.kind}
    if event.kind == "pull_request" and event.pr_number is not None:
        handled["promotions"] = _track_promotions(repo, event.pr_number, event.head_ref or "", event.merged)
        for handler in list(PR_STATE_HANDLERS):
            try:
                handler(repo, event)
            except Exception:  # one handler's bug must not lose the others' events
                logger.exception("PR state handler %r failed", handler)
    elif event.kind == "push":
        handled["ingest"] = _enqueue_ingest(repo)
        if event.ref and event.after_sha:
            # A push to a change's branch that is not the portal's recorded head: check it with
            # the forge now (the delivery only says so; the forge's answer decides).
            handled["branch_checks"] = changes_branch_pushed_webhook(
                repository=repo, ref=event.ref, after=event.after_sha
            )
    elif event.kind == "checks" and event.after_sha:
        # A check finished or changed: the open PRs at that head record it (changes.checks).
        handled["tracked"] = changes_track_head(event.after_sha)
    return handled


def _track_promotions(repo: GitRepository, number: int, head_ref: str, merged: bool) -> list[int]:
    ids = list(
        Promotion.objects.filter(repository=repo, state__in=TRACKED_STATES)
        .filter(pr_number=number)
        .values_list("pk", flat=True)
    )
    if not ids and head_ref.startswith("promote/"):
        ids = list(
            Promotion.objects.filter(
                repository=repo, state__in=TRACKED_STATES, pr_branch=head_ref
            ).values_list("pk", flat=True)
        )
    follow = FOLLOW_AFTER_MERGE if merged else 0
    for pk in ids:
        change_enqueue_track(kind=PROMOTION, change_id=pk, args=(follow,))
    return ids


def _enqueue_ingest(repo: GitRepository) -> bool:
    transaction.on_commit(lambda: repository_ingest_task.delay(repo.pk))
    return True
