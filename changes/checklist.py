"""The zero-downtime checklist and the secret scan of a change, as gates any change kind shows.

The rules themselves are pure (core.zerodowntime, changes.secretscan). This module decides what
they run on and what their result means for one app of one change:

- the objects: Argo CD's rendering at the revision the change produces (changes.rendered), one
  source per app x destination; when that rendering is not available yet, the kind may pass the
  objects it read from the overlay files instead (the gate says so);
- the modes: the target environment's `checklist:` (inventory config), over the defaults of
  core.zerodowntime.default_modes (stricter in a production-like environment); an application's
  `strategy_options.zero_downtime` of `off` turns the checklist off for it, `warn` makes every
  blocking check a warning;
- the gates: one per failing check (warn: a warning; block: blocking, and `overridable` by an
  approver who is not the requester, with a reason), or one passing gate for the whole checklist;
  the secret scan is one blocking gate nobody can override.

Gates are plain dicts in the kinds' gate shape: name, label, passed, blocking, detail, link,
transient, plus `overridable`, `overridden` (the reason, once an approver overrode it) and
`findings` (template-ready rows; secret findings carry file, line and detector, never a value).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.zerodowntime import CHECKS, CHECKS_BY_ID, default_modes, evaluate, modes_validate
from inventory.models import Application, Environment

from . import secretscan
from .rendered import RenderedChange, object_id

GateFields = dict[str, Any]
CHECKLIST_PREFIX = "checklist."
SECRET_SCAN = "secret_scan"
MAX_FINDINGS_PER_GATE = 30
# A Helm-values app has no overlay to read (overlayobjects follows kustomizations only) and the portal
# never renders a chart: its checklist runs on Argo CD's rendering of a pushed commit.
CHART_NOT_READ = "a Helm chart has no overlay to read and the portal never renders one: {then}"
# What happens to a Helm-values promotion's checklist before its request: not a failure to override.
AWAITS_RENDER = "checked on Argo CD's rendering once the request pushes the branch"
OVERRIDE_MIN_REASON = 10


def environment_modes(environment: Environment, application: Application | None = None) -> dict[str, str]:
    """Return every check's mode (off | warn | block) for changes of `application` into `environment`."""
    modes = default_modes(production_like=environment.production_like)
    # The config loader refuses bad values; a row edited by hand keeps the defaults.
    with contextlib.suppress(ValueError):
        modes.update(modes_validate(environment.checklist or {}))
    options = (
        application.strategy_options if application and isinstance(application.strategy_options, dict) else {}
    )
    app_mode = options.get("zero_downtime")
    if app_mode == "off":
        return dict.fromkeys(modes, "off")
    if app_mode == "warn":
        return {k: ("warn" if v == "block" else v) for k, v in modes.items()}
    return modes


@dataclass(frozen=True)
class ObjectSource:
    """The objects one app x destination will run, and where they come from."""

    destination: str
    objects: tuple[Mapping[str, Any], ...]
    namespace: str = ""
    origin: str = "rendered by Argo CD"


def sources_from_rendered(rendered: Iterable[RenderedChange]) -> list[ObjectSource]:
    """Sources from the renderings that succeeded (failed ones are the render gate's business)."""
    return [
        ObjectSource(
            r.destination,
            tuple(r.after_objects),
            r.namespace,
            f"rendered by Argo CD at {r.after_revision[:8]}",
        )
        for r in rendered
        if r.ok
    ]


def checklist_gates(
    *, app: str, modes: Mapping[str, str], sources: Sequence[ObjectSource], unavailable: str = ""
) -> list[GateFields]:
    """Run the checklist on each source; return the app's checklist gates (see module docstring)."""
    active = [c for c in CHECKS if modes.get(c.id, "off") != "off"]
    label = f"Zero-downtime checklist ({app})"
    if not active:
        return [
            _gate(f"{CHECKLIST_PREFIX}all", label, True, False, "checklist off for this app and environment")
        ]
    if not sources:
        blocking = any(modes.get(c.id) == "block" for c in active)
        detail = unavailable or "no rendered objects to check"
        # An approver may still decide (override with a reason): the request is not refused.
        return [
            _gate(
                f"{CHECKLIST_PREFIX}unavailable",
                label,
                False,
                blocking,
                f"not evaluated: {detail}",
                overridable=blocking,
            )
        ]
    findings: dict[str, list[dict[str, str]]] = {c.id: [] for c in active}
    workloads = 0
    for source in sources:
        results = evaluate(source.objects, default_namespace=source.namespace, only=[c.id for c in active])
        workloads += results[0].workloads if results else 0
        for result in results:
            for f in result.findings:
                row = f.as_dict()
                row["destination"] = source.destination
                row["target"] = f.target
                findings[result.check.id].append(row)
    origins = "; ".join(sorted({s.origin for s in sources}))
    gates: list[GateFields] = []
    for check in active:
        rows = findings[check.id]
        if not rows:
            continue
        blocking = modes[check.id] == "block"
        where = sorted({r["destination"] for r in rows})
        shown = "; ".join(f"{r['target']}: {r['message']}" for r in rows[:6])
        more = f" and {len(rows) - 6} more" if len(rows) > 6 else ""
        detail = f"{shown}{more} (on {', '.join(where)}; {origins})"
        gates.append(
            _gate(
                f"{CHECKLIST_PREFIX}{check.id}",
                f"Zero-downtime: {check.title} ({app})",
                False,
                blocking,
                detail,
                overridable=blocking,
                findings=rows[:MAX_FINDINGS_PER_GATE],
            )
        )
    if not gates:
        names = ", ".join(c.id for c in active)
        detail = f"{workloads} workload(s) on {len(sources)} destination(s) pass: {names} ({origins})"
        gates.append(
            _gate(f"{CHECKLIST_PREFIX}all", label, True, any(modes[c.id] == "block" for c in active), detail)
        )
    return gates


def secret_scan_gate(
    *,
    app: str,
    file_edits: Iterable[tuple[str, str | None, str]] = (),
    unified_diff: str = "",
    rendered: Iterable[RenderedChange] = (),
    baseline_text: str | bytes | None = None,
) -> GateFields:
    """Scan the change's added lines and its added or changed rendered objects; one blocking gate."""
    inputs = secretscan.file_edit_inputs(file_edits)
    if unified_diff:
        inputs += secretscan.unified_diff_inputs(unified_diff)
    for r in rendered:
        if not r.ok or r.diff is None:
            continue
        touched = {c.id for c in r.diff.changes if c.change != "removed"}
        objects = [o for o in r.after_objects if object_id(o, r.namespace) in touched]
        inputs += secretscan.object_inputs(f"{r.app}@{r.destination}", objects)
    result = secretscan.scan(inputs, baseline=secretscan.baseline_parse(baseline_text))
    return _gate(
        SECRET_SCAN,
        f"Secret scan ({app})",
        result.clean,
        True,
        secretscan.summary(result),
        findings=[f.as_dict() for f in result.findings],
    )


def _gate(
    name: str,
    label: str,
    passed: bool,
    blocking: bool,
    detail: str,
    *,
    overridable: bool = False,
    findings: Sequence[Mapping[str, Any]] = (),
) -> GateFields:
    return {
        "name": name,
        "label": label,
        "passed": passed,
        "blocking": blocking,
        "detail": detail,
        "link": "",
        "transient": False,
        "overridable": overridable,
        "overridden": "",
        "findings": tuple(dict(f) for f in findings),
    }


def is_checklist_gate(gate: Mapping[str, Any]) -> bool:
    return str(gate.get("name", "")).startswith(CHECKLIST_PREFIX)


def gate_key(gate: Mapping[str, Any]) -> str:
    """Identify a gate of one change across evaluations: its name and label (the label names the app)."""
    return f"{gate.get('name')}|{gate.get('label')}"


def overridable_failing(gates: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The blocking checklist gates that fail and that no approver has overridden yet."""
    return [
        g
        for g in gates
        if g.get("overridable") and g.get("blocking") and not g.get("passed") and not g.get("overridden")
    ]


def apply_override(gates: Iterable[GateFields], *, keys: Iterable[str], reason: str) -> list[GateFields]:
    """Mark the overridable failing gates named in `keys` as overridden with `reason`."""
    wanted = set(keys)
    out: list[GateFields] = []
    for g in gates:
        if g.get("overridable") and not g.get("passed") and gate_key(g) in wanted:
            g = {**g, "overridden": reason}
        out.append(g)
    return out


def check_title(check_id: str) -> str:
    check = CHECKS_BY_ID.get(check_id)
    return check.title if check else check_id
