"""Checklist and secret-scan gates from rendered changes and environment modes (no sandbox needed)."""

from __future__ import annotations

import copy

from changes.checklist import (
    ObjectSource,
    apply_override,
    checklist_gates,
    environment_modes,
    gate_key,
    overridable_failing,
    secret_scan_gate,
    sources_from_rendered,
)
from changes.rendered import rendered_compare
from inventory.models import Application, Environment
from tests.changes.test_checklist_rules import DELETE, deployment, pdb

AWS_KEY = "AKIA" + "4OPQRSTUVWXYZ234"


def test_modes_come_from_the_environment_over_the_defaults_and_the_app_can_soften_them():
    prod = Environment(name="prod", production_like=True, checklist={"resources": "warn"})
    dev = Environment(name="dev", checklist={"readiness_probe": "block", "bogus": "x"})
    app = Application(name="web", strategy_options={})
    assert environment_modes(prod, app)["resources"] == "warn"
    assert environment_modes(prod, app)["readiness_probe"] == "block"
    assert environment_modes(dev, app)["readiness_probe"] == "warn"  # a bad row keeps the defaults
    assert set(environment_modes(prod, Application(strategy_options={"zero_downtime": "warn"})).values()) <= {
        "warn",
        "off",
    }
    assert set(environment_modes(prod, Application(strategy_options={"zero_downtime": "off"})).values()) == {
        "off"
    }


def _rendered(after):
    before = [deployment(), pdb()]
    return rendered_compare(
        app="web-prod-eu-west-1",
        destination="prod-eu-west-1/shop",
        before_revision="a" * 40,
        after_revision="b" * 40,
        before_objects=before,
        after_objects=after,
        namespace="shop",
    )


def test_one_gate_per_failing_check_block_overridable_warn_not():
    broken = deployment(**{"spec__template__spec__containers__0__readinessProbe": DELETE, "spec__replicas": 4,
                           "spec__strategy": {}})  # fmt: skip
    sources = sources_from_rendered([_rendered([broken, pdb()])])
    modes = {"readiness_probe": "block", "rolling_update": "warn", "resources": "block"}
    gates = checklist_gates(app="web", modes=modes, sources=sources)
    by_name = {g["name"]: g for g in gates}
    assert set(by_name) == {"checklist.readiness_probe", "checklist.rolling_update"}
    ready = by_name["checklist.readiness_probe"]
    assert (ready["passed"], ready["blocking"], ready["overridable"]) == (False, True, True)
    assert ready["findings"][0]["destination"] == "prod-eu-west-1/shop"
    assert "rendered by Argo CD at bbbbbbbb" in ready["detail"]
    roll = by_name["checklist.rolling_update"]
    assert (roll["blocking"], roll["overridable"]) == (False, False)
    assert [gate_key(g) for g in overridable_failing(gates)] == [gate_key(ready)]
    overridden = apply_override(gates, keys=[gate_key(ready)], reason="known, fixed next release")
    assert not overridable_failing(overridden)


def test_a_passing_checklist_is_one_gate_and_no_sources_is_an_overridable_block():
    gates = checklist_gates(
        app="web", modes={"readiness_probe": "block"}, sources=[ObjectSource("prod", (deployment(), pdb()))]
    )
    assert [(g["name"], g["passed"]) for g in gates] == [("checklist.all", True)]
    (gate,) = checklist_gates(
        app="web", modes={"readiness_probe": "block"}, sources=[], unavailable="render failed"
    )
    assert (gate["passed"], gate["blocking"], gate["overridable"]) == (False, True, True)
    assert gate["detail"] == "not evaluated: render failed"
    (off,) = checklist_gates(app="web", modes={"readiness_probe": "off"}, sources=[])
    assert off["passed"]


def test_secret_scan_covers_the_rendered_objects_the_change_adds_or_alters():
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web", "namespace": "shop"},
              "data": {"AWS_ACCESS_KEY_ID": AWS_KEY}}  # fmt: skip
    gate = secret_scan_gate(app="web", rendered=[_rendered([deployment(), pdb(), config])])
    assert not gate["passed"] and gate["blocking"] and not gate["overridable"]
    (finding,) = gate["findings"]
    assert finding["file"] == "rendered web-prod-eu-west-1@prod-eu-west-1/shop ConfigMap shop/web"
    assert finding["detector"] == "AWS Access Key" and AWS_KEY not in repr(gate)
    # An object the change leaves as it is is not part of its rendered diff.
    unchanged = _rendered([deployment(), pdb()])
    assert secret_scan_gate(app="web", rendered=[unchanged])["passed"]
    changed = copy.deepcopy(deployment())
    changed["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "TOKEN", "value": AWS_KEY}]
    assert not secret_scan_gate(app="web", rendered=[_rendered([changed, pdb()])])["passed"]
