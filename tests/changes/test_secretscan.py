"""Secret scanning of a change's added lines and rendered objects (detect-secrets, in-process)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging

from changes.secretscan import (
    Baseline,
    baseline_parse,
    file_edit_inputs,
    object_inputs,
    scan,
    summary,
    unified_diff_inputs,
)

# Built at run time so that this file holds no literal a scanner would flag.
AWS_KEY = "AKIA" + "4OPQRSTUVWXYZ234"
PRIVATE_KEY_HEADER = "-----BEGIN RSA " + "PRIVATE KEY-----"


def sha1(value: str) -> str:
    return hashlib.sha1(value.encode()).hexdigest()


def test_aws_key_in_an_added_line_is_found_with_file_line_and_detector():
    before = "images:\n  - name: app\n    newTag: 1.0.0\n"
    after = before.replace("1.0.0", "1.0.1") + f"env:\n  AWS_ACCESS_KEY_ID: {AWS_KEY}\n"
    result = scan(file_edit_inputs([("environments/prod/app/kustomization.yaml", before, after)]))
    assert [f.as_dict() for f in result.findings] == [
        {"file": "environments/prod/app/kustomization.yaml", "line": 5, "detector": "AWS Access Key"}
    ]
    assert AWS_KEY not in summary(result) and "line 5: AWS Access Key" in summary(result)
    assert "nobody can override" in summary(result)


def test_only_added_lines_count():
    text = f"key: {AWS_KEY}\nversion: 1\n"
    result = scan(file_edit_inputs([("a.yaml", text, text.replace("version: 1", "version: 2"))]))
    assert result.clean and result.scanned_lines == 1


def test_private_key_in_a_unified_diff():
    diff = (
        "diff --git a/apps/x/secret.yaml b/apps/x/secret.yaml\n--- a/apps/x/secret.yaml\n+++ b/apps/x/secret.yaml\n"
        "@@ -1,2 +1,4 @@\n apiVersion: v1\n kind: ConfigMap\n+data:\n+  key: |\n"
        "@@ -10,1 +12,2 @@\n context\n+    " + PRIVATE_KEY_HEADER + "\n"
    )
    result = scan(unified_diff_inputs(diff))
    assert [str(f) for f in result.findings] == ["apps/x/secret.yaml line 13: Private Key"]


def test_rendered_secret_values_are_scanned_decoded_and_never_kept():
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "shop"},
        "data": {"aws": base64.b64encode(AWS_KEY.encode()).decode()},
    }
    result = scan(object_inputs("web@prod-eu-west-1", [secret]))
    assert [f.detector for f in result.findings] == ["AWS Access Key"]
    assert result.findings[0].file == "rendered web@prod-eu-west-1 Secret shop/creds"
    assert AWS_KEY not in json.dumps([f.as_dict() for f in result.findings]) + summary(result)


def test_baseline_allowlists_known_false_positives():
    edits = [("apps/x/config.yaml", None, f"key: {AWS_KEY}\n")]
    entry = {
        "type": "AWS Access Key",
        "filename": "apps/x/config.yaml",
        "hashed_secret": sha1(AWS_KEY),
        "line_number": 1,
    }
    baseline = baseline_parse(json.dumps({"version": "1.5.0", "results": {"apps/x/config.yaml": [entry]}}))
    result = scan(file_edit_inputs(edits), baseline=baseline)
    assert result.clean and result.allowlisted == 1
    assert "1 allowlisted by .secrets.baseline" in summary(result)
    # Another file with the same value is not allowlisted by that entry...
    assert not scan(
        file_edit_inputs([("apps/y/config.yaml", None, f"key: {AWS_KEY}\n")]), baseline=baseline
    ).clean
    # ...but a rendered object is (it comes from some file of the repository).
    rendered = object_inputs(
        "x@prod", [{"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": AWS_KEY}}]
    )
    assert scan(rendered, baseline=baseline).clean


def test_a_baseline_is_untrusted_input():
    assert baseline_parse("{not json").error.endswith("not valid JSON: ignored")
    assert baseline_parse('["x"]').error
    assert baseline_parse("x" * 1_000_001).error
    odd = baseline_parse(
        json.dumps({"results": {"a": [{"hashed_secret": "nothex", "type": "AWS Access Key"}, 3]}})
    )
    assert odd.entries == frozenset() and not odd.error
    assert Baseline().allows("a", "b", "c", any_file=True) is False
    result = scan(file_edit_inputs([("a.yaml", None, f"k: {AWS_KEY}\n")]), baseline=baseline_parse("{bad"))
    assert not result.clean and "not valid JSON" in result.baseline_error


def test_the_value_never_reaches_the_logs(caplog):
    caplog.set_level(logging.DEBUG)
    scan(file_edit_inputs([("a.yaml", None, f"password: {AWS_KEY}\nk: {AWS_KEY}\n")]))
    assert AWS_KEY not in caplog.text


def test_digests_and_commit_shas_are_not_secrets():
    digest = hashlib.sha256(b"x").hexdigest()
    after = f"images:\n  - name: app\n    digest: sha256:{digest}\nrevision: {sha1('r')}\n"
    assert scan(file_edit_inputs([("k.yaml", None, after)])).clean


def test_redact_diff_masks_flagged_lines_only():
    from changes.secretscan import redact_diff

    diff = f"--- a/x.yaml\n+++ b/x.yaml\n@@ -1,2 +1,3 @@\n region: eu\n+key: {AWS_KEY}\n-old: 1\n"
    out = redact_diff(diff)
    assert AWS_KEY not in out
    assert "+(hidden: AWS Access Key found by the secret scan)\n" in out and " region: eu\n" in out
