"""Argo CD sync windows: which windows an app has, whether a sync may run now, when it next may.

Argo CD's rules (AppProject ``spec.syncWindows``; argo-cd ``pkg/apis/application/v1alpha1``
``SyncWindows.CanSync``): a window is *active* while its cron schedule fired within the last
``duration``; an active ``deny`` window blocks syncs (manual ones only when every active deny window
allows ``manualSync``); when ``allow`` windows are assigned, syncs run only while one of them is
active. A window is assigned to an app when any of its ``applications`` / ``namespaces`` /
``clusters`` globs match (all of them with ``andOperator``). Schedules are 5-field cron in the
window's ``timeZone`` (UTC when empty); durations are Go durations (``1h30m``).

Pure functions on plain mappings (the Argo CD JSON field names), no Django: the portal uses them to
tell people when a closed window opens; Argo CD itself stays the judge of every sync request.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_NAMES = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
    "oct": 10, "nov": 11, "dec": 12,
    "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
}  # fmt: skip
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
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")
# How far ahead the next opening is searched (a yearly window still opens within this).
SEARCH_HORIZON = timedelta(days=400)


class SyncWindowError(ValueError):
    """A schedule, duration or time zone Argo CD would not accept."""


# ---------------------------------------------------------------------------------------------
# Cron and durations


def _value(token: str) -> int:
    token = token.lower()
    if token in _NAMES:
        return _NAMES[token]
    if not token.isdigit():
        raise SyncWindowError(f"invalid cron value {token!r}")
    return int(token)


def _field(expr: str, lo: int, hi: int) -> frozenset[int]:
    values: set[int] = set()
    for part in expr.split(","):
        rng, _, step_text = part.partition("/")
        if step_text and not step_text.isdigit():
            raise SyncWindowError(f"invalid step in {expr!r}")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise SyncWindowError(f"invalid step in {expr!r}")
        if rng == "*":
            start, end = lo, hi
        elif "-" in rng:
            first, last = rng.split("-", 1)
            start, end = _value(first), _value(last)
        else:
            start = _value(rng)
            end = hi if step_text else start
        top = hi + 1 if hi == 6 else hi  # day of week 7 is Sunday too
        if start < lo or end > top or start > end:
            raise SyncWindowError(f"cron field {expr!r} out of range")
        values.update(range(start, end + 1, step))
    return frozenset(v % 7 if hi == 6 else v for v in values)


@lru_cache(maxsize=256)
def parse_cron(schedule: str) -> tuple[frozenset[int], ...]:
    """Parse a 5-field cron schedule (or an @macro) into the allowed values of each field."""
    text = _MACROS.get(schedule.strip(), schedule.strip())
    fields = text.split()
    if len(fields) != 5:
        raise SyncWindowError(f"cron schedule {schedule!r} must have 5 fields")
    return tuple(_field(f, lo, hi) for f, (lo, hi) in zip(fields, _RANGES, strict=True))


def cron_matches(schedule: str, when: datetime) -> bool:
    """Tell whether the schedule fires at `when`'s minute (in `when`'s own time zone)."""
    minute, hour, _dom, month, _dow = parse_cron(schedule)
    if when.minute not in minute or when.hour not in hour or when.month not in month:
        return False
    return _day_matches(schedule, when)


def parse_go_duration(text: str) -> timedelta:
    """Parse a Go duration as sync windows use it: ``1h``, ``30m``, ``1h30m``, ``90s``."""
    total, pos = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            raise SyncWindowError(f"invalid duration {text!r}")
        pos = match.end()
        total += float(match.group(1)) * {"h": 3600, "m": 60, "s": 1}[match.group(2)]
    if not text or pos != len(text):
        raise SyncWindowError(f"invalid duration {text!r}")
    return timedelta(seconds=total)


def _zone(window: Mapping[str, Any]) -> ZoneInfo | Any:
    name = str(window.get("timeZone") or "")
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SyncWindowError(f"unknown time zone {name!r}") from None


# ---------------------------------------------------------------------------------------------
# One window


def _minute(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(second=0, microsecond=0)


def window_active(window: Mapping[str, Any], now: datetime) -> bool:
    """Tell whether the window's schedule fired within the last `duration` before `now`."""
    return _last_start(window, now) is not None


def _last_start(window: Mapping[str, Any], now: datetime) -> datetime | None:
    """The firing time T with T <= now < T + duration, if any (the window is active)."""
    schedule = str(window.get("schedule") or "")
    minutes = int(parse_go_duration(str(window.get("duration") or "")).total_seconds() // 60)
    zone = _zone(window)
    start = _minute(now)
    for back in range(minutes):
        at = start - timedelta(minutes=back)
        if cron_matches(schedule, at.astimezone(zone)):
            return at
    return None


def window_end(window: Mapping[str, Any], now: datetime) -> datetime | None:
    """When an active window stops being active (None if it is not active)."""
    start = _last_start(window, now)
    if start is None:
        return None
    return start + parse_go_duration(str(window.get("duration") or ""))


def window_assigned(
    window: Mapping[str, Any], *, app: str, namespace: str, cluster: str, server: str
) -> bool:
    """Tell whether a project window applies to an app (its globs; all of them with andOperator)."""

    def any_glob(patterns: Iterable[str], *values: str) -> bool:
        return any(fnmatch.fnmatchcase(v, p) for p in patterns for v in values if v)

    checks = []
    if window.get("applications"):
        checks.append(any_glob(window["applications"], app))
    if window.get("namespaces"):
        checks.append(any_glob(window["namespaces"], namespace))
    if window.get("clusters"):
        checks.append(any_glob(window["clusters"], cluster, server))
    if not checks:
        return False
    return all(checks) if window.get("andOperator") else any(checks)


# ---------------------------------------------------------------------------------------------
# All windows of an app


def sync_allowed(windows: Sequence[Mapping[str, Any]], now: datetime, *, manual: bool = False) -> bool:
    """Argo CD's CanSync for the app's assigned windows at `now` (`manual`: a manual sync)."""
    if not windows:
        return True
    active = [w for w in windows if window_active(w, now)]
    denies = [w for w in active if w.get("kind") == "deny"]
    if denies:
        return manual and all(bool(w.get("manualSync")) for w in denies)
    if any(w.get("kind") == "allow" for w in active):
        return True
    inactive_allows = [w for w in windows if w.get("kind") == "allow" and w not in active]
    if inactive_allows:
        return manual and any(bool(w.get("manualSync")) for w in inactive_allows)
    return True


def next_opening(
    windows: Sequence[Mapping[str, Any]], now: datetime, *, horizon: timedelta = SEARCH_HORIZON
) -> datetime | None:
    """The first minute from `now` on at which the windows allow a sync (None: not within `horizon`).

    Candidates are the ends of active deny windows and the firing times of allow windows; each is
    checked with `sync_allowed`, so overlapping windows are handled.
    """
    now = now.astimezone(UTC)
    if sync_allowed(windows, now):
        return now
    end_of_search = now + horizon
    at = _minute(now) + timedelta(minutes=1)
    # Step by the next event: a window starting or an active one ending.
    while at <= end_of_search:
        if sync_allowed(windows, at):
            return at
        following = _next_event(windows, at, end_of_search)
        if following is None:
            return None
        at = following
    return None


def _next_event(windows: Sequence[Mapping[str, Any]], after: datetime, limit: datetime) -> datetime | None:
    """The next minute after `after` at which some window starts or ends (None: none before `limit`)."""
    candidates = []
    for window in windows:
        end = window_end(window, after)
        if end is not None and end > after:
            candidates.append(end)
        start = _next_fire(str(window.get("schedule") or ""), _zone(window), after, limit)
        if start is not None:
            candidates.append(start)
    return min(candidates) if candidates else None


def _next_fire(schedule: str, zone: Any, after: datetime, limit: datetime) -> datetime | None:
    """The first minute strictly after `after` at which the schedule fires (skipping whole days
    and hours that cannot match)."""
    minute_set, hour_set, _dom, month_set, _dow = parse_cron(schedule)
    at = _minute(after) + timedelta(minutes=1)
    while at <= limit:
        local = at.astimezone(zone)
        if local.month not in month_set or not _day_matches(schedule, local):
            at = _minute((local + timedelta(days=1)).replace(hour=0, minute=0).astimezone(UTC))
            continue
        if local.hour not in hour_set:
            at = _minute((local + timedelta(hours=1)).replace(minute=0).astimezone(UTC))
            continue
        if local.minute in minute_set:
            return at
        at += timedelta(minutes=1)
    return None


def _day_matches(schedule: str, local: datetime) -> bool:
    _minute_set, _hour_set, dom, _month, dow = parse_cron(schedule)
    text = _MACROS.get(schedule.strip(), schedule.strip()).split()
    dom_ok, dow_ok = local.day in dom, (local.isoweekday() % 7) in dow
    if text[2] != "*" and text[4] != "*":
        return dom_ok or dow_ok
    return dom_ok and dow_ok


def window_validate(window: Mapping[str, Any]) -> None:
    """Raise SyncWindowError for a window Argo CD would refuse (kind, schedule, duration, zone)."""
    if window.get("kind") not in ("allow", "deny"):
        raise SyncWindowError("window kind must be allow or deny")
    parse_cron(str(window.get("schedule") or ""))
    parse_go_duration(str(window.get("duration") or ""))
    _zone(window)
