"""The rendered diff, pure: canonical YAML, object diff (Secrets by key only), sync order, the
PreSync callout, the gate verdict and the PR body section's size cap."""

from __future__ import annotations

import json
from typing import Any

import pytest

from changes.rendered import (
    RenderedChange,
    canonical_yaml,
    object_diff,
    object_id,
    rendered_compare,
    rendered_verdict,
    sync_plan,
)
from changes.renderedsummary import PR_BODY_LIMIT, body_cap, rendered_summary_markdown

SECRET_VALUE = "c3VwZXItc2VjcmV0LXBhc3N3b3Jk"  # base64 of a password: must never come out
NEW_SECRET_VALUE = "bm90LXRvLWJlLXNlZW4="


def deployment(image: str = "registry.example.com/acme/web:1.0.0", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", **meta},
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {"containers": [{"name": "web", "image": image, "readinessProbe": {"x": 1}}]}
            },
        },
    }


def secret(**data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "data": data,
    }


def job(hook: str = "PreSync", image: str = "migrate:1", name: str = "migrate") -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "annotations": {"argocd.argoproj.io/hook": hook},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "m", "image": image}]}}},
    }


def annotated(kind: str, name: str, wave: str | None = None, api: str = "v1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop"}
    if wave is not None:
        meta["annotations"] = {"argocd.argoproj.io/sync-wave": wave}
    return {"apiVersion": api, "kind": kind, "metadata": meta}


# ---- canonical YAML ------------------------------------------------------------------------------------


def test_canonical_yaml_sorts_keys_and_drops_status_and_server_set_metadata():
    obj = deployment(
        uid="1b2c",
        resourceVersion="123",
        generation=4,
        creationTimestamp="2026-01-01T00:00:00Z",
        selfLink="/apis/apps/v1/x",
        managedFields=[{"manager": "kubectl"}],
        annotations={
            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            "argocd.argoproj.io/tracking-id": "web:apps/Deployment:shop/web",
            "team": "shop",
        },
    )
    obj["status"] = {"readyReplicas": 2}
    text = canonical_yaml(obj)
    for gone in ("uid", "resourceVersion", "generation", "creationTimestamp", "selfLink", "managedFields"):
        assert gone not in text
    assert "status" not in text and "readyReplicas" not in text
    assert "last-applied-configuration" not in text and "tracking-id" not in text
    assert "team: shop" in text
    assert text.splitlines()[:3] == ["apiVersion: apps/v1", "kind: Deployment", "metadata:"]
    # Key order of the input does not matter.
    shuffled = json.loads(json.dumps(obj), object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    assert canonical_yaml(shuffled) == text


def test_object_identity_is_group_kind_namespace_name():
    oid = object_id(deployment())
    assert (oid.group, oid.kind, oid.namespace, oid.name) == ("apps", "Deployment", "shop", "web")
    assert str(oid) == "Deployment.apps shop/web"
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}
    assert object_id(service, "default-ns").namespace == "default-ns"
    assert str(object_id(service)) == "Service web"


# ---- object diff -------------------------------------------------------------------------------------------


def test_object_diff_lists_added_removed_and_changed_with_a_unified_diff():
    before = [deployment(), annotated("Service", "web"), annotated("ConfigMap", "old")]
    after = [
        deployment("registry.example.com/acme/web:1.1.0"),
        annotated("Service", "web"),
        annotated("ConfigMap", "new"),
    ]
    diff = object_diff(before, after, before_label="aaa", after_label="bbb")
    assert [str(c.id) for c in diff.added] == ["ConfigMap shop/new"]
    assert [str(c.id) for c in diff.removed] == ["ConfigMap shop/old"]
    assert [str(c.id) for c in diff.changed] == ["Deployment.apps shop/web"]
    assert diff.unchanged == 1
    changed = diff.changed[0].diff
    assert "--- aaa/Deployment.apps shop/web" in changed and "+++ bbb/Deployment.apps shop/web" in changed
    assert "-      - image: registry.example.com/acme/web:1.0.0" in changed
    assert "+      - image: registry.example.com/acme/web:1.1.0" in changed
    assert [(k.kind, k.added, k.removed, k.changed) for k in diff.by_kind] == [
        ("ConfigMap", 1, 1, 0),
        ("Deployment", 0, 0, 1),
    ]


def test_server_set_fields_alone_are_no_change():
    live_like = deployment(uid="x", resourceVersion="9")
    live_like["status"] = {"replicas": 2}
    assert object_diff([deployment()], [live_like]).empty


def test_secrets_show_only_which_keys_changed_never_values():
    before = [secret(password=SECRET_VALUE, user="YWRtaW4=")]
    after = [secret(password=NEW_SECRET_VALUE, token="dG9r")]
    change = rendered_compare(
        app="web-prod",
        destination="prod/shop",
        before_revision="a" * 40,
        after_revision="b" * 40,
        before_objects=before,
        after_objects=after,
    )
    assert change.diff is not None
    (only,) = change.diff.changes
    assert only.change == "changed" and only.diff == ""
    assert only.secret_keys == ("data.password changed", "data.token added", "data.user removed")
    # No value anywhere: not in the diff, not in the objects kept for others, not in the PR body.
    everywhere = repr(change) + rendered_summary_markdown([change], link="http://portal/x")
    for value in (SECRET_VALUE, NEW_SECRET_VALUE, "YWRtaW4=", "dG9r"):
        assert value not in everywhere
    assert change.after_objects[0]["data"] == {"password": "(hidden)", "token": "(hidden)"}
    assert SECRET_VALUE not in canonical_yaml(before[0])


def test_an_added_secret_names_its_keys_only():
    diff = object_diff([], [secret(password=SECRET_VALUE)])
    (added,) = diff.added
    assert added.secret_keys == ("data.password added",) and added.diff == ""


# ---- sync order ------------------------------------------------------------------------------------------


def test_sync_plan_orders_by_phase_wave_kind_and_name():
    objects = [
        deployment(annotations={"argocd.argoproj.io/sync-wave": "1"}),
        annotated("Service", "web", wave="-1"),
        annotated("ConfigMap", "b-config"),
        annotated("ConfigMap", "a-config"),
        annotated("PodDisruptionBudget", "web", api="policy/v1"),
        annotated("Widget", "custom", api="example.com/v1"),
        job("PostSync"),
        job("PreSync", name="pre"),
        job("SyncFail", name="cleanup"),
        job("Skip", name="skipped"),
    ]
    plan = sync_plan(objects)
    order = [(s.phase, s.wave, s.id.kind, s.id.name) for s in plan.steps]
    assert order == [
        ("PreSync", 0, "Job", "pre"),
        ("Sync", -1, "Service", "web"),
        ("Sync", 0, "PodDisruptionBudget", "web"),
        ("Sync", 0, "ConfigMap", "a-config"),
        ("Sync", 0, "ConfigMap", "b-config"),
        ("Sync", 0, "Widget", "custom"),  # custom resources after the known kinds
        ("Sync", 1, "Deployment", "web"),
        ("PostSync", 0, "Job", "migrate"),
        ("SyncFail", 0, "Job", "cleanup"),
    ]
    assert [str(s) for s in plan.skipped] == ["Job.batch shop/skipped"]
    assert [(g.phase, g.wave, len(g.steps)) for g in plan.groups][:3] == [
        ("PreSync", 0, 1),
        ("Sync", -1, 1),
        ("Sync", 0, 4),
    ]


def test_helm_hooks_map_to_argocd_phases_with_their_weight():
    obj = annotated("Job", "helm-migrate", api="batch/v1")
    obj["metadata"]["annotations"] = {"helm.sh/hook": "pre-upgrade,pre-install", "helm.sh/hook-weight": "-5"}
    (step,) = sync_plan([obj]).steps
    assert (step.phase, step.wave, step.hook) == ("PreSync", -5, True)


def test_changed_objects_are_marked_in_their_wave():
    before = [
        deployment(annotations={"argocd.argoproj.io/sync-wave": "1"}),
        annotated("Service", "web", "-1"),
    ]
    after = [
        deployment("registry.example.com/acme/web:2.0.0", annotations={"argocd.argoproj.io/sync-wave": "1"}),
        annotated("Service", "web", "-1"),
    ]
    change = rendered_compare(
        app="a",
        destination="d",
        before_revision="1",
        after_revision="2",
        before_objects=before,
        after_objects=after,
    )
    assert change.waves is not None
    marks = {(g.wave, s.id.kind): s.change for g in change.waves.groups for s in g.steps}
    assert marks == {(-1, "Service"): "", (1, "Deployment"): "changed"}
    assert not change.waves.callouts


def test_a_change_that_adds_or_alters_a_presync_hook_is_called_out():
    added = rendered_compare(
        app="a",
        destination="d",
        before_revision="1",
        after_revision="2",
        before_objects=[deployment()],
        after_objects=[deployment(), job()],
    )
    assert added.waves is not None and len(added.waves.callouts) == 1
    assert "adds the PreSync hook Job.batch shop/migrate" in added.waves.callouts[0]
    altered = rendered_compare(
        app="a",
        destination="d",
        before_revision="1",
        after_revision="2",
        before_objects=[job(image="m:1")],
        after_objects=[job(image="m:2")],
    )
    assert altered.waves is not None and "alters the PreSync hook" in altered.waves.callouts[0]
    same = rendered_compare(
        app="a",
        destination="d",
        before_revision="1",
        after_revision="2",
        before_objects=[job()],
        after_objects=[job()],
    )
    post = rendered_compare(
        app="a",
        destination="d",
        before_revision="1",
        after_revision="2",
        before_objects=[],
        after_objects=[job("PostSync")],
    )
    assert same.waves is not None and not same.waves.callouts
    assert post.waves is not None and not post.waves.callouts


# ---- the gate verdict and the PR body ---------------------------------------------------------------------


def test_a_render_failure_fails_the_verdict_with_argocds_message():
    ok = rendered_compare(
        app="web-prod",
        destination="prod/shop",
        before_revision="1",
        after_revision="2",
        before_objects=[deployment()],
        after_objects=[deployment("x:2")],
    )
    failed = RenderedChange(
        "api-prod",
        "prod/shop",
        "1",
        "2",
        error="Argo CD answered 500: Manifest generation error (cached): rpc error: code = Unknown desc = "
        "kustomize build failed: accumulating resources",
    )
    verdict = rendered_verdict([ok, failed])
    assert not verdict.passed and not verdict.transient
    assert "api-prod: Argo CD answered 500: Manifest generation error" in verdict.detail
    assert rendered_verdict([ok]).passed
    pending = rendered_verdict([RenderedChange("a", "d", "1", "", pending=True)])
    assert pending.passed and pending.pending and "after the branch is pushed" in pending.detail
    timeout = rendered_verdict(
        [RenderedChange("a", "d", "1", "2", error="context deadline exceeded", transient=True)]
    )
    assert not timeout.passed and timeout.transient


def test_pr_body_summary_has_counts_objects_link_and_is_capped():
    change = rendered_compare(
        app="web-prod",
        destination="prod/shop",
        before_revision="a" * 40,
        after_revision="b" * 40,
        before_objects=[deployment()],
        after_objects=[deployment("x:2"), job()],
    )
    text = rendered_summary_markdown([change], link="http://portal/promotions/7/#rendered")
    assert "http://portal/promotions/7/#rendered" in text
    assert "1 added, 0 removed, 1 changed" in text and "Deployment ~1" in text and "Job +1" in text
    assert "- changed: `Deployment.apps shop/web`" in text and "PreSync hook" in text
    assert "truncated" not in text
    many = [
        rendered_compare(
            app=f"app-{i}",
            destination="prod/shop",
            before_revision="a" * 40,
            after_revision="b" * 40,
            before_objects=[],
            after_objects=[annotated("ConfigMap", f"cm-{i}-{j}") for j in range(200)],
        )
        for i in range(20)
    ]
    capped = rendered_summary_markdown(many, link="http://portal/x", limit=10_000)
    assert len(capped) <= 10_000 and capped.endswith(
        "truncated: the full rendered diff is on the portal page"
    )
    body = body_cap("x\n" * 50_000, capped)
    assert len(body) <= PR_BODY_LIMIT and "truncated (the pull request body has a size limit)" in body
    assert body.endswith(capped)
    assert body_cap("short", "section") == "short\n\nsection"


def test_canonical_yaml_is_safe_from_many_threads_at_once():
    """A worker's thread pool renders several changes at once: one shared dumper corrupted them."""
    from concurrent.futures import ThreadPoolExecutor

    from changes.manifests import canonical_yaml

    objects = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{i}"},
            "data": {str(k): "v" * k for k in range(40)},
        }
        for i in range(64)
    ]
    expected = [canonical_yaml(o) for o in objects]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(5):
            assert list(pool.map(canonical_yaml, objects)) == expected


def _huge(apps: int = 60, objects: int = 400) -> list[RenderedChange]:
    """A huge rendered diff (24,000 added objects with long names), built without rendering YAML."""
    from changes.rendered import ObjectChange, ObjectDiff, ObjectId

    return [
        RenderedChange(
            f"app-{i}",
            "prod/shop",
            "a" * 40,
            "b" * 40,
            diff=ObjectDiff(
                tuple(
                    ObjectChange(ObjectId("", "ConfigMap", "shop", f"config-{i}-{j}-{'x' * 40}"), "added")
                    for j in range(objects)
                )
            ),
        )
        for i in range(apps)
    ]


@pytest.mark.parametrize(
    ("forge", "cap"), [("github", 65_536), ("gitea", 65_536), ("forgejo", 65_536), ("gitlab", 1_000_000)]
)
def test_a_huge_rendered_diff_fits_each_forges_body_cap(forge, cap):
    from changes.renderedsummary import pr_body_limit, summary_limit

    section = rendered_summary_markdown(_huge(), link="http://portal/x", limit=summary_limit(forge))
    main = "| app | before | after |\n" * 80_000  # and a huge changelog
    body = body_cap(main, section, limit=pr_body_limit(forge))
    assert len(body) <= cap
    assert body.endswith(section) and section.endswith("the full rendered diff is on the portal page")
    assert "truncated (the pull request body has a size limit)" in body
    assert "http://portal/x" in body
    assert "**app-0** → prod/shop" in section and "- added: `ConfigMap shop/config-0-0-" in section
    if forge == "gitlab":  # GitLab takes far more of the list than GitHub does
        assert len(section) > 10 * summary_limit("github")


def test_an_unknown_forge_gets_githubs_cap():
    from changes.renderedsummary import pr_body_limit

    assert pr_body_limit("") == PR_BODY_LIMIT and pr_body_limit("github") <= 65_536


def test_the_rendered_partial_names_secret_keys_never_values():
    """The htmx partial of the pages: a Secret's keys are listed, its values (unmasked or masked) never."""
    from django.template.loader import render_to_string

    before = [secret(password=SECRET_VALUE, user="YWRtaW4="), deployment()]
    after = [secret(password=NEW_SECRET_VALUE, token="dG9r"), deployment("x:2")]
    change = rendered_compare(
        app="web-prod",
        destination="prod/shop",
        before_revision="a" * 40,
        after_revision="b" * 40,
        before_objects=before,
        after_objects=after,
    )
    html = render_to_string(
        "changes/_rendered.html", {"changes": [change], "gate": rendered_verdict([change])}
    )
    assert "<code>Secret shop/db</code>" in html and "Secret: values are never shown." in html
    for key in ("data.password changed", "data.token added", "data.user removed"):
        assert f"<code>{key}</code>" in html
    for value in (SECRET_VALUE, NEW_SECRET_VALUE, "YWRtaW4=", "dG9r"):
        assert value not in html
    assert "<code>Deployment.apps shop/web</code>" in html  # the rest of the diff is shown
