"""Gate evaluations as they happened: what the requester saw, then each later re-evaluation.

A change's gates are evaluated at the request, again on Argo CD's rendering of the pushed branch,
and at PR opening. Each evaluation is kept as a snapshot (label, time, gates) exactly as evaluated,
never recomputed: the change page and the change record show the request's first, then the later
ones labelled as such. A finished change is not evaluated again, so its list stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict

from django.utils.dateparse import parse_datetime

AT_REQUEST = "at request"
ON_RENDERING = "on Argo CD's rendering"
AT_PR_OPENING = "at PR opening"
AFTER_OVERRIDE = "after an approver's checklist override"
LAST_EVALUATION = "last evaluation"  # a change requested before snapshots were kept
MAX_SNAPSHOTS = 20  # PR-opening retries that change a gate's result each add one: bounded


class GateSnapshot(TypedDict):
    label: str
    at: str  # ISO 8601 with the time zone
    gates: list[dict[str, Any]]


def gate_snapshot(label: str, at: datetime, gates: Iterable[Mapping[str, Any]]) -> GateSnapshot:
    return {"label": label, "at": at.isoformat(), "gates": [dict(g) for g in gates]}


def _results(gates: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    return [(g.get("name"), bool(g.get("passed")), g.get("detail"), g.get("overridden")) for g in gates]


def snapshots_append(existing: Sequence[Mapping[str, Any]] | None, snapshot: GateSnapshot) -> list[Any]:
    """Return the snapshots with `snapshot` added, unless it repeats the last one of its label.

    A retried PR opening that evaluates to the same results adds nothing (the first time stays).
    """
    out = [dict(s) for s in existing or [] if isinstance(s, Mapping)]
    same_label = [s for s in out if s.get("label") == snapshot["label"]]
    if same_label and _results(same_label[-1].get("gates") or []) == _results(snapshot["gates"]):
        return out
    out.append(dict(snapshot))
    if len(out) > MAX_SNAPSHOTS:
        out = out[:1] + out[-(MAX_SNAPSHOTS - 1) :]  # the request's stays
    return out


class ShownSnapshot(TypedDict):
    label: str
    at: datetime | None
    gates: list[dict[str, Any]]


def snapshots_shown(
    snapshots: Sequence[Mapping[str, Any]] | None,
    *,
    requested_gates: Sequence[Mapping[str, Any]] | None = None,
    requested_at: datetime | None = None,
    last_gates: Sequence[Mapping[str, Any]] | None = None,
) -> list[ShownSnapshot]:
    """The snapshots for a page, oldest first; a change without any falls back to its two lists."""
    if snapshots:
        return [
            {
                "label": str(s.get("label", "")),
                "at": parse_datetime(str(s.get("at") or "")),
                "gates": list(s.get("gates") or []),
            }
            for s in snapshots
            if isinstance(s, Mapping)
        ]
    out: list[ShownSnapshot] = []
    if requested_gates:
        out.append({"label": AT_REQUEST, "at": requested_at, "gates": [dict(g) for g in requested_gates]})
    if last_gates and _results(last_gates) != _results(requested_gates or []):
        out.append({"label": LAST_EVALUATION, "at": None, "gates": [dict(g) for g in last_gates]})
    return out
