"""Checkpoints shipped off the server are the reference that catches a truncated or re-chained ledger."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.bundle import verify_checkpoint
from audit.chain import event_hash
from audit.models import AuditCheckpoint, AuditEvent, CheckpointShipment
from audit.services import audit_checkpoint_create, audit_event_record, event_as_record
from audit.shipping import SHIPPED_FILE, ShipError, audit_checkpoints_ship, shipped_checkpoints_read
from audit.signing import verification_keys
from audit.tasks import audit_checkpoint_create_task
from audit.verify import audit_chain_verify

pytestmark = pytest.mark.django_db


def _record(n: int) -> None:
    for i in range(n):
        audit_event_record(action="promotion.merged", app="payments-api", environment="prod", message=f"m{i}")


def _as_owner(*statements: str) -> None:
    """What someone holding the owner role (or a superuser) can do; rolled back with the test."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
        cursor.execute("ALTER TABLE audit_auditcheckpoint DISABLE TRIGGER USER")
        for statement in statements:
            cursor.execute(statement)


def _two_shipped_checkpoints(directory) -> None:
    _record(5)
    audit_checkpoint_create()
    assert audit_checkpoints_ship(target=str(directory)) == 1
    _record(3)
    audit_checkpoint_create()
    assert audit_checkpoints_ship(target=str(directory)) == 1


def test_shipping_to_a_directory_appends_each_signed_checkpoint_once(tmp_path):
    _two_shipped_checkpoints(tmp_path)
    assert audit_checkpoints_ship(target=str(tmp_path)) == 0  # idempotent: remembers what it shipped
    call_command("audit_ship", "--to", str(tmp_path))
    lines = (tmp_path / SHIPPED_FILE).read_text().splitlines()
    assert [json.loads(line)["head_sequence"] for line in lines] == [5, 8]
    assert CheckpointShipment.objects.filter(target=str(tmp_path)).count() == 2
    for record in shipped_checkpoints_read(str(tmp_path)):
        assert verify_checkpoint(record, verification_keys()) is None
    call_command("audit_verify", "--shipped", str(tmp_path))


def test_deleting_the_newest_events_and_their_checkpoints_is_caught_by_the_shipped_copy(tmp_path):
    _two_shipped_checkpoints(tmp_path)
    _as_owner(
        "DELETE FROM audit_auditevent WHERE sequence > 5",
        "DELETE FROM audit_checkpointshipment WHERE checkpoint_id IN "
        "(SELECT id FROM audit_auditcheckpoint WHERE head_sequence > 5)",
        "DELETE FROM audit_auditcheckpoint WHERE head_sequence > 5",
    )
    # The database alone is consistent again: chain 1..5, its checkpoint at 5.
    assert audit_chain_verify().ok
    report = audit_chain_verify(shipped=shipped_checkpoints_read(str(tmp_path)))
    assert not report.ok
    assert report.first_problem.sequence == 8
    assert "shipped checkpoint names this event but it is missing" in report.first_problem.message
    with pytest.raises(CommandError, match="sequence 8"):
        call_command("audit_verify", "--shipped", str(tmp_path))


def test_rewriting_events_after_the_last_checkpoint_is_caught_by_the_shipped_copy(tmp_path):
    _two_shipped_checkpoints(tmp_path)
    # Rewrite #7 and re-chain #8, and drop the checkpoint that signed #8.
    previous = AuditEvent.objects.get(sequence=6).hash
    statements = []
    for sequence in (7, 8):
        record = event_as_record(AuditEvent.objects.get(sequence=sequence))
        record.update(prev_hash=previous, message="nothing happened" if sequence == 7 else record["message"])
        previous = event_hash(record)
        statements.append(
            f"UPDATE audit_auditevent SET message = '{record['message']}', prev_hash = '{record['prev_hash']}', "
            f"hash = '{previous}' WHERE sequence = {sequence}"
        )
    _as_owner(
        *statements,
        "DELETE FROM audit_checkpointshipment WHERE checkpoint_id IN "
        "(SELECT id FROM audit_auditcheckpoint WHERE head_sequence = 8)",
        "DELETE FROM audit_auditcheckpoint WHERE head_sequence = 8",
    )
    assert audit_chain_verify().ok  # re-chained after the last checkpoint left in the database
    report = audit_chain_verify(shipped=shipped_checkpoints_read(str(tmp_path)))
    assert not report.ok
    assert report.first_problem.sequence == 8
    assert "hash differs from the one a signed shipped checkpoint holds" in report.first_problem.message


def test_a_forged_shipped_copy_does_not_verify(tmp_path):
    _two_shipped_checkpoints(tmp_path)
    path = tmp_path / SHIPPED_FILE
    lines = path.read_text().splitlines()
    forged = {**json.loads(lines[-1]), "head_sequence": 7}
    path.write_text("\n".join([*lines[:-1], json.dumps(forged)]) + "\n")
    with pytest.raises(CommandError, match="signature does not verify"):
        call_command("audit_verify", "--shipped", str(tmp_path))


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []
    status = 201

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.headers.get("Authorization", ""), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def collector():
    _Collector.received = []
    _Collector.status = 201
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/checkpoints", _Collector
    server.shutdown()
    server.server_close()


def test_shipping_to_an_http_endpoint_posts_each_checkpoint_once(collector, settings):
    url, handler = collector
    settings.AUDIT_SHIP_TOKEN = "ship-token"
    _record(2)
    audit_checkpoint_create()
    handler.status = 503
    with pytest.raises(ShipError, match="HTTP 503"):
        audit_checkpoints_ship(target=url)
    assert not CheckpointShipment.objects.exists()  # a failed send is retried by the next run
    handler.status = 201
    assert audit_checkpoints_ship(target=url) == 1
    assert audit_checkpoints_ship(target=url) == 0
    _record(1)
    audit_checkpoint_create()
    call_command("audit_ship", "--to", url)
    sequences = [body["head_sequence"] for _, body in handler.received]
    assert sequences == [2, 2, 3]  # the refused first attempt, then each checkpoint once
    assert {auth for auth, _ in handler.received} == {"Bearer ship-token"}
    assert handler.received[-1][1]["signature"] == AuditCheckpoint.objects.get(head_sequence=3).signature


def test_the_checkpoint_task_ships_when_a_target_is_configured(tmp_path, settings):
    settings.AUDIT_SHIP_TO = str(tmp_path)
    _record(2)
    assert audit_checkpoint_create_task() == 2
    assert [r["head_sequence"] for r in shipped_checkpoints_read(str(tmp_path))] == [2]
