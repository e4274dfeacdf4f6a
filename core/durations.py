"""Human-readable durations for pages and reports: "14 s", "3 min 20 s", "2 h 5 min", "3 d 4 h"."""

from __future__ import annotations

from datetime import timedelta

_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def format_duration(value: timedelta | float | int | None) -> str:
    """Return a duration as its two largest units ("" for None; negative durations count as 0).

    Seconds are truncated, so a lead time never reads longer than it was; under one second reads
    "< 1 s" (something happened) and zero reads "0 s".
    """
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        return "0 s"
    if seconds < 1:
        return "< 1 s"
    rest = int(seconds)
    parts: list[str] = []
    for size, unit in _UNITS:
        count, rest = divmod(rest, size)
        if count or parts:
            parts.append(f"{count} {unit}")
        if len(parts) == 2:
            break
    if len(parts) == 2 and parts[1].startswith("0 "):
        parts.pop()
    return " ".join(parts)
