"""Outgoing webhooks: payloads (generic JSON and Slack-compatible), HMAC signatures, one small client.

Generic webhook request::

    POST <url>
    Content-Type: application/json
    User-Agent: gitops-portal/...
    X-GitopsPortal-Event: promotion.merged
    X-GitopsPortal-Delivery: <subscription id>-<event sequence>
    X-GitopsPortal-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the subscription secret>

Receivers verify with ``hmac.compare_digest(expected, header)`` over the raw body bytes (exactly as
GitHub's ``X-Hub-Signature-256``). Retries send the identical body (its sha256 is in the delivery log).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import requests

from integrations.http import USER_AGENT, UnsafeURL, check_url, new_session

SIGNATURE_HEADER = "X-GitopsPortal-Signature-256"
EVENT_HEADER = "X-GitopsPortal-Event"
DELIVERY_HEADER = "X-GitopsPortal-Delivery"
TIMEOUT = (3.05, 10.0)
MAX_RESPONSE_BYTES = 16 * 1024


def canonical_body(payload: Any) -> bytes:
    """Serialise a payload the same way on every attempt (sorted keys, compact, UTF-8)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def sign(secret: str, body: bytes) -> str:
    """Return the signature header value: ``sha256=<hex HMAC-SHA256(secret, body)>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Check a signature header the way a receiver should (constant-time)."""
    return hmac.compare_digest(sign(secret, body), header or "")


def event_payload(event: Any, *, projects: list[str], portal_url: str, delivery_id: str) -> dict[str, Any]:
    """Return the generic JSON payload of an audit event."""
    base = portal_url.rstrip("/")
    return {
        "delivery": delivery_id,
        "portal": base,
        "projects": sorted(projects),
        "event": {
            "sequence": event.sequence,
            "hash": event.hash,
            "created_at": event.created_at.isoformat(),
            "action": event.action,
            "actor": event.actor_name,
            "actor_type": event.actor_type,
            "target_type": event.target_type,
            "target_id": event.target_id,
            "target_label": event.target_label,
            "app": event.app,
            "environment": event.environment,
            "cluster": event.cluster,
            "shas": list(event.shas or []),
            "pr_url": event.pr_url,
            "out_of_band": event.out_of_band,
            "message": event.message,
            "correlation_id": event.correlation_id,
            "url": f"{base}/audit/events/{event.sequence}/",
        },
    }


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn control characters: untrusted text must not become links or mentions.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(event: Any, *, projects: list[str], portal_url: str) -> dict[str, Any]:
    """Return a Slack-compatible incoming-webhook payload (text plus one mrkdwn section)."""
    loud = event.action.endswith(("failed", "degraded", "detected")) or event.out_of_band
    icon = ":rotating_light:" if loud else ":information_source:"
    where = " → ".join(p for p in (event.app, event.environment) if p)
    summary = f"{event.action} {where}".strip()
    lines = [f"{icon} *{_slack_escape(summary)}*"]
    if event.message:
        lines.append(_slack_escape(event.message[:500]))
    lines.append(
        f"by {_slack_escape(event.actor_name)}"
        + (f" · {_slack_escape(', '.join(sorted(projects)))}" if projects else "")
    )
    link = f"{portal_url.rstrip('/')}/audit/events/{event.sequence}/"
    lines.append(f"<{link}|audit event #{event.sequence}>")
    if event.pr_url.startswith(("https://", "http://")):
        lines.append(f"<{_slack_escape(event.pr_url)}|pull request>")
    return {
        "text": _slack_escape(summary),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}],
    }


@dataclass(frozen=True)
class WebhookResponse:
    status: int
    text: str


class WebhookError(Exception):
    """The request could not be sent or answered (transient) or the URL is refused (permanent)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


_session: requests.Session | None = None


def _shared_session() -> requests.Session:
    global _session
    if _session is None:
        _session = new_session(user_agent=USER_AGENT)
    return _session


def post(url: str, body: bytes, headers: dict[str, str], *, allow_http: bool) -> WebhookResponse:
    """POST a body to a webhook receiver (no redirects, timeouts, capped response read)."""
    try:
        check_url(url, allow_http=allow_http)
    except UnsafeURL as exc:
        raise WebhookError(f"refusing webhook URL: {exc}", permanent=True) from None
    try:
        # Reference: the receiver's contract is ours (docs/insight.md); Slack: api.slack.com/messaging/webhooks
        resp = _shared_session().post(
            url,
            data=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=TIMEOUT,
            allow_redirects=False,
            stream=True,
        )
    except requests.exceptions.RequestException as exc:
        raise WebhookError(f"{type(exc).__name__} posting to the webhook") from None
    try:
        raw = resp.raw.read(MAX_RESPONSE_BYTES, decode_content=True) or b""
    except (requests.exceptions.RequestException, OSError):
        raw = b""
    finally:
        resp.close()
    return WebhookResponse(resp.status_code, raw.decode("utf-8", "replace")[:500])
