"""The portal's verdict from gates and approvals, and its own status never counted as CI (pure)."""

from __future__ import annotations

from changes.checks import checks_verdict
from changes.portalstatus import gates_status
from integrations.forges import Check, status_description

OWN = Check("gitops-portal/gates", "pending", "status")
CI = Check("ci/validate", "success", "status")


def _gate(name: str, *, passed: bool, blocking: bool = True, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "label": name.title(),
        "passed": passed,
        "blocking": blocking,
        "detail": "why",
        **extra,
    }


def test_any_never_waits_on_the_portals_own_status():
    assert checks_verdict([OWN, CI], ["any"]).verdict == "success"
    alone = checks_verdict([OWN], ["any"])
    assert alone.verdict == "waiting" and alone.rows == ()
    # Named in required_checks by mistake: still not awaited.
    assert checks_verdict([CI], ["ci/validate", "gitops-portal/gates"]).verdict == "success"


def test_a_failing_check_of_the_same_name_from_another_source_still_counts():
    run = Check("gitops-portal/gates", "failure", "check_run")
    assert checks_verdict([run, CI], ["any"]).verdict == "checks_failed"


def test_gates_decide_failure_pending_and_success():
    ok = [_gate("secret_scan", passed=True), _gate("checklist.probes", passed=False, blocking=False)]
    assert gates_status(ok, sha="a", approved=True).state == "success"
    assert gates_status(ok, sha="a", approved=False).state == "pending"
    blocked = gates_status([*ok, _gate("rendered", passed=False)], sha="a", approved=True)
    assert blocked.state == "failure" and blocked.description.startswith("Blocked: Rendered: why")
    overridden = [*ok, _gate("checklist.pdb", passed=False, overridable=True, overridden="known risk")]
    assert gates_status(overridden, sha="a", approved=True).state == "success"
    waiting = gates_status([_gate("rendered", passed=False, transient=True)], sha="a", approved=True)
    assert waiting.state == "pending"


def test_descriptions_fit_githubs_140_characters_on_one_line():
    text = status_description("Blocked:\n" + "x" * 300)
    assert len(text) == 140 and "\n" not in text and text.endswith("…")
    assert status_description("short") == "short"
