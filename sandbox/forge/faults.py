"""Fault injection: make chosen requests slow, fail, or hit (secondary) rate limits on purpose.

`POST /sandbox/faults` takes one JSON object (or a list of them); each object becomes one or more
rules. Keys: status, count, rate, paths, methods, message, latency_ms, fail_after_create, git,
secondary_rate_limit {count, retry_after, status}, primary_rate_limit {count, reset_in}.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .routing import ApiError, Request, Response

SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {request_id}."
)
SECONDARY_DOC = "/using-the-rest-api/rate-limits-for-the-rest-api#about-secondary-rate-limits"
PRIMARY_DOC = "/using-the-rest-api/rate-limits-for-the-rest-api"


@dataclass
class FaultRule:
    kind: str  # "status", "secondary", "primary", "latency", "after_create"
    status: int = 502
    count: int | None = 1  # remaining triggers; None = until reset
    rate: float = 1.0
    paths: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    message: str | None = None
    latency_ms: int = 0
    retry_after: int | None = None
    reset_in: int = 60
    git: bool = False  # smart-HTTP git traffic is spared unless asked for
    triggered: int = 0

    def matches(self, method: str, path: str, *, is_git: bool, creates: bool) -> bool:
        if is_git and not self.git:
            return False
        if self.kind == "after_create" and not creates:
            return False
        if self.methods and method not in self.methods:
            return False
        return not self.paths or any(fragment in path for fragment in self.paths)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def parse_rules(data: dict[str, Any]) -> list[FaultRule]:
    """Turn one fault JSON object into independent rules (latency, rate limits, failures)."""
    paths = _as_list(data.get("paths"))
    methods = [m.upper() for m in _as_list(data.get("methods"))]
    git = bool(data.get("git", False))

    def rule(kind: str, **fields: Any) -> FaultRule:
        return FaultRule(kind, paths=paths, methods=methods, git=git, **fields)

    rate = float(data["rate"]) if "rate" in data else 1.0
    # A rate without a count means "until reset"; a bare status fails just the next request.
    count = data.get("count", None if "rate" in data else 1)
    rules: list[FaultRule] = []
    if data.get("latency_ms"):
        rules.append(rule("latency", latency_ms=int(data["latency_ms"]), count=data.get("latency_count")))
    secondary = data.get("secondary_rate_limit")
    if isinstance(secondary, dict):
        retry_after = secondary.get("retry_after", 60)
        rules.append(
            rule(
                "secondary",
                status=int(secondary.get("status", 403)),
                count=secondary.get("count", 1),
                retry_after=None if retry_after is None else int(retry_after),
            )
        )
    primary = data.get("primary_rate_limit")
    if isinstance(primary, dict):
        rules.append(
            rule(
                "primary",
                status=int(primary.get("status", 403)),
                count=primary.get("count", 1),
                reset_in=int(primary.get("reset_in", 60)),
            )
        )
    failure = {
        "status": int(data.get("status", 502)),
        "count": count,
        "rate": rate,
        "message": data.get("message"),
    }
    if data.get("fail_after_create"):
        rules.append(rule("after_create", **failure))
    elif "status" in data or "rate" in data:
        rules.append(rule("status", **failure))
    return rules


class FaultInjector:
    """Holds active rules; thread-safe because the server handles requests concurrently."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._rng = random.Random(seed)

    def add(self, data: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
        items = data if isinstance(data, list) else [data]
        new_rules = [rule for item in items for rule in parse_rules(item)]
        if not new_rules:
            raise ApiError(
                422, "No fault given: set status, rate, latency_ms, fail_after_create or *_rate_limit"
            )
        with self._lock:
            self._rules.extend(new_rules)
        return self.describe()

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(rule) for rule in self._rules]

    def _take(self, kinds: tuple[str, ...], req: Request, *, is_git: bool, creates: bool) -> FaultRule | None:
        """Find the first rule of `kinds` that fires for this request and consume one of its uses."""
        with self._lock:
            for rule in self._rules:
                if rule.kind not in kinds or not rule.matches(
                    req.method, req.path, is_git=is_git, creates=creates
                ):
                    continue
                if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                    continue
                rule.triggered += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                return rule
        return None

    def delay(self, req: Request, *, is_git: bool = False) -> None:
        rule = self._take(("latency",), req, is_git=is_git, creates=False)
        if rule:
            time.sleep(rule.latency_ms / 1000)

    def before(self, req: Request, *, request_id: str, is_git: bool = False) -> Response | None:
        """A fault response to send instead of handling the request, if any rule fires."""
        rule = self._take(("secondary", "primary", "status"), req, is_git=is_git, creates=False)
        if rule is None:
            return None
        if rule.kind == "secondary":
            headers = {"retry-after": str(rule.retry_after)} if rule.retry_after is not None else {}
            message = SECONDARY_MESSAGE.format(request_id=request_id)
            return ApiError(rule.status, message, doc=SECONDARY_DOC, headers=headers).response()
        if rule.kind == "primary":
            reset = int(time.time()) + rule.reset_in
            headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
            message = f"API rate limit exceeded for {req.login or 'this client'}."
            return ApiError(rule.status, message, doc=PRIMARY_DOC, headers=headers).response()
        return _failure(rule)

    def after_create(self, req: Request) -> Response | None:
        """Replace a successful create's answer with a failure (the write already happened)."""
        rule = self._take(("after_create",), req, is_git=False, creates=True)
        return _failure(rule) if rule else None


def _failure(rule: FaultRule) -> Response:
    default = "Server Error" if rule.status >= 500 else "Injected fault"
    return ApiError(rule.status, rule.message or default).response()
