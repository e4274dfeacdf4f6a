"""Webhook signature checks and payload parsing for GitHub, Gitea/Forgejo and GitLab.

Verify the signature on the raw body *before* calling `parse_webhook`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from integrations.http import JsonReader, ParseError


class WebhookPayloadError(ValueError):
    """The webhook body or headers are not what the forge sends."""


@dataclass(frozen=True)
class WebhookEvent:
    """The parts of a webhook delivery the portal acts on.

    `kind` is "pull_request", "push", "checks", "ping" or the raw event name; `action` is the forge's
    own action (GitLab: open/close/merge/update...). For pushes `ref` is the full ref. "checks" is a
    CI result of commit `after_sha`: GitHub/Gitea `status`, GitHub `check_run` / `check_suite`, GitLab
    Pipeline and Job hooks.
    """

    forge: str
    kind: str
    event: str
    delivery_id: str | None
    action: str | None
    repo_full_name: str
    pr_number: int | None = None
    merged: bool = False
    merge_commit_sha: str | None = None
    head_ref: str | None = None
    base_ref: str | None = None
    ref: str | None = None
    before_sha: str | None = None
    after_sha: str | None = None


def _hmac_hex(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_github_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Check `X-Hub-Signature-256: sha256=<hex>` against the raw body in constant time."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + _hmac_hex(secret, body)
    return hmac.compare_digest(expected.encode(), header.strip().lower().encode())


def verify_gitea_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Check `X-Gitea-Signature` (bare hex HMAC-SHA256, no prefix) in constant time."""
    if not secret or not header:
        return False
    return hmac.compare_digest(_hmac_hex(secret, body).encode(), header.strip().lower().encode())


def verify_gitlab_token(secret: bytes, header: str | None) -> bool:
    """Check `X-Gitlab-Token` (the shared secret verbatim) in constant time."""
    if not secret or not header:
        return False
    return hmac.compare_digest(secret, header.encode())


def verify_signature(forge: str, secret: bytes, headers: Mapping[str, str], body: bytes) -> bool:
    """Verify a delivery with the scheme of its forge."""
    h = _lower(headers)
    if forge == "github":
        return verify_github_signature(secret, body, h.get("x-hub-signature-256"))
    if forge in ("gitea", "forgejo"):
        signature = h.get("x-gitea-signature") or h.get("x-forgejo-signature")
        return verify_gitea_signature(secret, body, signature)
    if forge == "gitlab":
        return verify_gitlab_token(secret, h.get("x-gitlab-token"))
    return False


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def parse_webhook(forge: str, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
    """Parse a delivery into a WebhookEvent; raise WebhookPayloadError when malformed."""
    h = _lower(headers)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookPayloadError("webhook body is not valid JSON") from None
    try:
        if forge == "github":
            return _parse_hub("github", h.get("x-github-event"), h.get("x-github-delivery"), data)
        if forge in ("gitea", "forgejo"):
            event = h.get("x-gitea-event") or h.get("x-forgejo-event") or h.get("x-github-event")
            return _parse_hub(forge, event, h.get("x-gitea-delivery") or h.get("x-forgejo-delivery"), data)
        if forge == "gitlab":
            return _parse_gitlab(h.get("x-gitlab-event"), h.get("x-gitlab-event-uuid"), data)
    except ParseError as exc:
        raise WebhookPayloadError(f"malformed {forge} webhook: {exc}") from None
    raise WebhookPayloadError(f"unknown forge {forge!r}")


def _parse_hub(forge: str, event: str | None, delivery: str | None, data: Any) -> WebhookEvent:
    """Parse GitHub-shaped payloads (Gitea copies GitHub's layout)."""
    if not event:
        raise WebhookPayloadError(f"{forge} webhook without an event header")
    r = JsonReader(data)
    # Only pull_request/push must name a repository (org-level pings do not).
    repo = r.obj("repository").text("full_name")
    if event in ("pull_request", "push") and not repo:
        r.fail("repository.full_name", "missing")
    base = WebhookEvent(forge, event, event, delivery, r.opt_text("action"), repo)
    if event == "pull_request":
        pr = r.req_obj("pull_request")
        action = r.req_text("action")
        merged = action == "closed" and pr.flag("merged")
        return replace(
            base,
            kind="pull_request",
            action=action,
            pr_number=r.integer("number") or pr.req_integer("number"),
            merged=merged,
            merge_commit_sha=pr.opt_text("merge_commit_sha") if merged else None,
            head_ref=pr.req_obj("head").req_text("ref"),
            base_ref=pr.req_obj("base").req_text("ref"),
        )
    if event == "push":
        return replace(
            base,
            kind="push",
            action=None,
            ref=r.req_text("ref"),
            before_sha=r.opt_text("before"),
            after_sha=r.req_text("after"),
        )
    if event == "status":
        return replace(base, kind="checks", after_sha=r.req_text("sha"))
    if event in ("check_run", "check_suite"):
        return replace(base, kind="checks", after_sha=r.req_obj(event).req_text("head_sha"))
    return base


_GITLAB_KINDS = {"merge_request": "pull_request", "push": "push", "pipeline": "checks", "build": "checks"}


def _parse_gitlab(event: str | None, delivery: str | None, data: Any) -> WebhookEvent:
    r = JsonReader(data)
    object_kind = r.req_text("object_kind")
    project = r.req_obj("project")
    repo = project.req_text("path_with_namespace")
    base = WebhookEvent(
        "gitlab", _GITLAB_KINDS.get(object_kind, object_kind), event or object_kind, delivery, None, repo
    )
    if object_kind == "merge_request":
        attrs = r.req_obj("object_attributes")
        merged = attrs.text("state") == "merged" or attrs.text("action") == "merge"
        return replace(
            base,
            kind="pull_request",
            action=attrs.opt_text("action"),
            pr_number=attrs.req_integer("iid"),
            merged=merged,
            merge_commit_sha=attrs.opt_text("merge_commit_sha") if merged else None,
            head_ref=attrs.req_text("source_branch"),
            base_ref=attrs.req_text("target_branch"),
        )
    if object_kind == "push":
        return replace(
            base,
            kind="push",
            action=None,
            ref=r.req_text("ref"),
            before_sha=r.opt_text("before"),
            after_sha=r.req_text("after"),
        )
    if object_kind == "pipeline":
        return replace(base, after_sha=r.req_obj("object_attributes").req_text("sha"))
    if object_kind == "build":
        return replace(base, after_sha=r.req_text("sha"))
    return base
