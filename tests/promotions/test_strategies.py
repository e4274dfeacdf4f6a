"""Strategy edits are round-trip: only the changed lines differ, comments and quoting stay."""

from __future__ import annotations

import pytest

from inventory.models import Application, Environment
from promotions.strategies import ImageRef, SourceState, StrategyError, plan_edits

STAGE, PROD = Environment(name="stage", order=2), Environment(name="prod", order=3)

PROD_KUST = """# prod overlay: owned by the payments team
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../apps/ledger/base   # shared base
images:
  - name: registry.example.com/acme/ledger
    newTag: '1.4.2'  # pinned by the portal
  - name: registry.example.com/acme/sidecar
    newTag: "0.9"
patches:
  - patch: |-
      - op: replace
        path: /spec/replicas
        value: 3
"""


def _files(files: dict[str, str]):
    return lambda path: files.get(path)


def _plan(app: Application, source_files: dict[str, str], target_files: dict[str, str], images=()):
    return plan_edits(
        app=app,
        source_env=STAGE,
        target_env=PROD,
        source=SourceState("a" * 40, tuple(images), _files(source_files)),
        read_target=_files(target_files),
    )


def _changed(diff: str) -> list[str]:
    return [x for x in diff.splitlines() if x[:1] in "+-" and not x.startswith(("+++", "---"))]


def test_kustomize_images_changes_one_line_and_keeps_comments_and_quotes():
    app = Application(name="ledger", project="payments")
    plan = _plan(
        app,
        {},
        {"environments/prod/ledger/kustomization.yaml": PROD_KUST},
        ["registry.example.com/acme/ledger:1.5.0"],
    )
    assert _changed(plan.diff) == [
        "-    newTag: '1.4.2'  # pinned by the portal",
        "+    newTag: '1.5.0'  # pinned by the portal",
    ]
    assert plan.version_before == "1.4.2" and plan.version_after == "1.5.0"


def test_kustomize_images_falls_back_to_the_source_overlay_and_quotes_numbers():
    app = Application(name="ledger", project="payments")
    stage = PROD_KUST.replace("'1.4.2'", "'1.4.3'").replace('"0.9"', '"1.0"')
    plan = _plan(
        app,
        {"environments/stage/ledger/kustomization.yaml": stage},
        {"environments/prod/ledger/kustomization.yaml": PROD_KUST},
    )
    assert _changed(plan.diff) == [
        "-    newTag: '1.4.2'  # pinned by the portal",
        "+    newTag: '1.4.3'  # pinned by the portal",
        '-    newTag: "0.9"',
        '+    newTag: "1.0"',
    ]


def test_digest_pins_follow_the_source_digest():
    app = Application(name="ledger", project="payments")
    target = PROD_KUST.replace("newTag: '1.4.2'  # pinned by the portal", "digest: sha256:" + "1" * 64)
    plan = _plan(
        app,
        {},
        {"environments/prod/ledger/kustomization.yaml": target},
        ["registry.example.com/acme/ledger@sha256:" + "2" * 64],
    )
    assert _changed(plan.diff) == ["-    digest: sha256:" + "1" * 64, "+    digest: sha256:" + "2" * 64]


def test_helm_values_copies_listed_paths_only():
    app = Application(
        name="ledger", project="payments", strategy="helm-values", strategy_options={"paths": ["image.tag"]}
    )
    values = 'replicaCount: 3  # prod\nimage:\n  repository: acme/ledger\n  tag: "1.4.2"\nlogLevel: warn\n'
    source = 'replicaCount: 1\nimage:\n  repository: acme/ledger\n  tag: "1.5.0"\nlogLevel: debug\n'
    plan = _plan(
        app,
        {"environments/stage/ledger/values.yaml": source},
        {"environments/prod/ledger/values.yaml": values},
    )
    assert _changed(plan.diff) == ['-  tag: "1.4.2"', '+  tag: "1.5.0"']
    assert plan.versions_after == ["image.tag=1.5.0"]


def test_copy_paths_copies_files_and_refuses_escapes():
    app = Application(
        name="ledger", project="payments", strategy="copy-paths", strategy_options={"paths": ["config.json"]}
    )
    plan = _plan(
        app,
        {"environments/stage/ledger/config.json": '{"a": 2}\n'},
        {"environments/prod/ledger/config.json": '{"a": 1}\n'},
    )
    assert _changed(plan.diff) == ['-{"a": 1}', '+{"a": 2}']
    evil = Application(
        name="ledger",
        project="p",
        strategy="copy-paths",
        strategy_options={"paths": ["../../../../.git/config"]},
    )
    with pytest.raises(StrategyError):
        _plan(evil, {}, {})


def test_unrelated_images_are_an_error_not_a_silent_noop():
    app = Application(name="ledger", project="payments")
    with pytest.raises(StrategyError, match="none of the images"):
        _plan(
            app,
            {},
            {"environments/prod/ledger/kustomization.yaml": PROD_KUST},
            ["registry.example.com/acme/other:2.0"],
        )


def test_image_ref_parsing():
    assert ImageRef.parse("reg:5000/a/b:1.2") == ImageRef("reg:5000/a/b", "1.2", "")
    assert ImageRef.parse("a/b@sha256:" + "f" * 64).digest == "sha256:" + "f" * 64
    assert ImageRef.parse("a/b").version == ""


def test_an_overlay_planned_again_reuses_its_indentation_and_edits_the_same():
    from promotions import strategies

    strategies._style.cache_clear()
    app = Application(name="ledger", project="payments")
    files = {"environments/prod/ledger/kustomization.yaml": PROD_KUST}
    first = _plan(app, {}, files, ["registry.example.com/acme/ledger:1.5.0"])
    assert strategies._style.cache_info().misses == 1

    again = _plan(app, {}, files, ["registry.example.com/acme/ledger:1.5.0"])

    # The changelog walk plans the same overlay at every commit: worked out once per content.
    assert strategies._style.cache_info().hits == 1 and strategies._style.cache_info().misses == 1
    assert again.diff == first.diff and again.edits[0].after == first.edits[0].after
    assert _changed(first.diff) == [
        "-    newTag: '1.4.2'  # pinned by the portal",
        "+    newTag: '1.5.0'  # pinned by the portal",
    ]
