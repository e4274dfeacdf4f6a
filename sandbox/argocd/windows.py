"""Argo CD sync windows: 5-field cron matching and the CanSync rules of AppProject.spec.syncWindows."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

_NAMES = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
    "sun": 0,
    "mon": 1,
    "tue": 2,
    "wed": 3,
    "thu": 4,
    "fri": 5,
    "sat": 6,
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")


class CronError(ValueError):
    pass


def _parse_value(token: str) -> int:
    token = token.lower()
    if token in _NAMES:
        return _NAMES[token]
    if not token.isdigit():
        raise CronError(f"invalid cron value {token!r}")
    return int(token)


def _parse_field(expr: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in expr.split(","):
        rng, _, step_s = part.partition("/")
        step = int(step_s) if step_s else 1
        if step < 1:
            raise CronError(f"invalid step in {expr!r}")
        if rng == "*":
            start, end = lo, hi
        elif "-" in rng:
            a, b = rng.split("-", 1)
            start, end = _parse_value(a), _parse_value(b)
        else:
            start = _parse_value(rng)
            end = hi if step_s else start
        if start < lo or end > hi + (1 if hi == 6 else 0) or start > end:
            raise CronError(f"cron field {expr!r} out of range")
        values.update(range(start, end + 1, step))
    return frozenset(v % 7 if hi == 6 else v for v in values)  # dow 7 == sunday


@lru_cache(maxsize=256)
def parse_cron(schedule: str) -> tuple[frozenset[int], ...]:
    schedule = _MACROS.get(schedule.strip(), schedule.strip())
    fields = schedule.split()
    if len(fields) != 5:
        raise CronError(f"cron schedule {schedule!r} must have 5 fields")
    return tuple(_parse_field(f, lo, hi) for f, (lo, hi) in zip(fields, _RANGES, strict=True))


def cron_matches(schedule: str, when: datetime) -> bool:
    minute, hour, dom, month, dow = parse_cron(schedule)
    fields = schedule.split()
    if when.minute not in minute or when.hour not in hour or when.month not in month:
        return False
    # Standard cron: if both day fields are restricted, either may match.
    dom_ok, dow_ok = when.day in dom, (when.isoweekday() % 7) in dow
    if len(fields) == 5 and fields[2] != "*" and fields[4] != "*":
        return dom_ok or dow_ok
    return dom_ok and dow_ok


def parse_duration(text: str) -> timedelta:
    """Go-style durations as used by sync windows: ``1h``, ``30m``, ``1h30m``, ``90s``."""
    total = 0.0
    pos = 0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            raise ValueError(f"invalid duration {text!r}")
        pos = m.end()
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1}[m.group(2)]
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r}")
    return timedelta(seconds=total)


def window_active(window: Mapping[str, Any], now: datetime) -> bool:
    """True if the cron fired within the last ``duration`` (what Argo CD calls an active window)."""
    minute = int(now.timestamp()) // 60
    return _active_at(
        window.get("schedule", "* * * * *"), window.get("duration", "1h"), window.get("timeZone", ""), minute
    )


@lru_cache(maxsize=4096)
def _active_at(schedule: str, duration: str, tz_name: str, minute: int) -> bool:
    # Cached per minute: the reconciler asks this for every app on every pass.
    tz = ZoneInfo(tz_name) if tz_name else UTC
    local = datetime.fromtimestamp(minute * 60, tz)
    minutes = int(parse_duration(duration).total_seconds() // 60)
    # Active while some firing time T satisfies T <= now < T + duration.
    return any(cron_matches(schedule, local - timedelta(minutes=i)) for i in range(minutes))


def _glob_any(patterns: Iterable[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def window_matches_app(
    window: Mapping[str, Any], app: str, namespace: str, cluster: str, server: str
) -> bool:
    """Which windows are assigned to an app: any of applications/namespaces/clusters globs match
    (or all of them with ``andOperator``)."""
    checks = []
    if window.get("applications"):
        checks.append(_glob_any(window["applications"], app))
    if window.get("namespaces"):
        checks.append(_glob_any(window["namespaces"], namespace))
    if window.get("clusters"):
        checks.append(_glob_any(window["clusters"], cluster) or _glob_any(window["clusters"], server))
    if not checks:
        return False
    return all(checks) if window.get("andOperator") else any(checks)


def can_sync(windows: Sequence[Mapping[str, Any]], now: datetime, *, manual: bool) -> bool:
    """Argo CD's SyncWindows.CanSync: active deny blocks; inactive allow windows block too."""
    if not windows:
        return True
    active = [w for w in windows if window_active(w, now)]
    denies = [w for w in active if w.get("kind") == "deny"]
    if denies:
        return manual and all(w.get("manualSync") for w in denies)
    if any(w.get("kind") == "allow" for w in active):
        return True
    inactive_allows = [w for w in windows if w.get("kind") == "allow" and w not in active]
    if inactive_allows:
        return manual and any(w.get("manualSync") for w in inactive_allows)
    return True


def app_window_view(window: Mapping[str, Any]) -> dict[str, Any]:
    """The reduced window shape of /applications/{name}/syncwindows."""
    out: dict[str, Any] = {
        "kind": window.get("kind", ""),
        "schedule": window.get("schedule", ""),
        "duration": window.get("duration", ""),
    }
    if window.get("manualSync"):
        out["manualSync"] = True
    return out


def closing_window(
    seconds: float, *, now: datetime | None = None, clusters: Sequence[str] = ("prod-*",)
) -> dict[str, Any]:
    """A deny window that opened this minute and stays active ``seconds`` (whole minutes, like
    Argo CD's): the demo's "closed now, opens at …" on the prod clusters."""
    now = now or datetime.now(UTC)
    minutes = max(1, -(-int(seconds) // 60))
    return {
        "kind": "deny",
        "schedule": f"{now.minute} {now.hour} {now.day} {now.month} *",
        "duration": f"{minutes}m",
        "clusters": list(clusters),
        "manualSync": False,
        "timeZone": "UTC",
        "description": f"Change freeze ({minutes} min, sandbox)",
    }


def validate_window(window: Any) -> None:
    """Reject a window Argo CD would refuse: kind, a 5-field schedule and a Go duration."""
    if not isinstance(window, dict):
        raise ValueError("a window must be an object")
    if window.get("kind") not in ("allow", "deny"):
        raise ValueError("window kind must be allow or deny")
    parse_cron(str(window.get("schedule", "")))
    parse_duration(str(window.get("duration", "")))
    if window.get("timeZone"):
        ZoneInfo(str(window["timeZone"]))
