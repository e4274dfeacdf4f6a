"""Deliver GitHub-style webhooks on a background thread so API calls never wait on the receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from .state import Delivery, ForgeState, now_iso

logger = logging.getLogger(__name__)
HOOK_ID = "424242"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDispatcher:
    """A single worker thread draining a queue; deliveries are recorded in the forge state."""

    def __init__(self, state: ForgeState, url: str | None, secret: str | None, timeout: float = 3.0) -> None:
        self.state = state
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self._queue: queue.Queue[tuple[Delivery, bytes] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="forge-webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=self.timeout + 1)
            self._thread = None

    def configure(self, url: str | None, secret: str | None) -> None:
        self.url, self.secret = url, secret

    def emit(self, event: str, payload: dict[str, Any], repo: str) -> None:
        """Queue one delivery; a no-op when no webhook URL is configured."""
        if not self.url:
            return
        delivery = Delivery(
            id=str(uuid.uuid4()), event=event, action=payload.get("action"), repo=repo, url=self.url
        )
        with self.state.lock:
            self.state.deliveries.append(delivery)
        self._queue.put((delivery, json.dumps(payload).encode()))

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until queued deliveries are done (tests use this instead of sleeping)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._deliver(*item)
            finally:
                self._queue.task_done()

    def _deliver(self, delivery: Delivery, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/sandbox",
            "X-GitHub-Event": delivery.event,
            "X-GitHub-Delivery": delivery.id,
            "X-GitHub-Hook-ID": HOOK_ID,
            "X-GitHub-Hook-Installation-Target-Type": "repository",
        }
        if self.secret:
            headers["X-Hub-Signature-256"] = signature(self.secret, body)
            headers["X-Hub-Signature"] = (
                "sha1=" + hmac.new(self.secret.encode(), body, hashlib.sha1).hexdigest()
            )
        request = urllib.request.Request(delivery.url, data=body, headers=headers, method="POST")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                delivery.status_code = answer.status
        except urllib.error.HTTPError as exc:
            delivery.status_code = exc.code
            delivery.error = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        delivery.duration_ms = int((time.monotonic() - started) * 1000)
        delivery.delivered_at = now_iso()
        if delivery.error:
            logger.warning(
                "webhook %s %s to %s failed: %s", delivery.event, delivery.id, delivery.url, delivery.error
            )
