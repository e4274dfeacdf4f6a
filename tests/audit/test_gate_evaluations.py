"""A change record keeps every gate evaluation, labelled and timed, and says whether the last passed."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import ChangeRecord
from audit.services import change_record_sync
from tests.factories import user_with_role

pytestmark = pytest.mark.django_db


def _gate(name: str, passed: bool, evaluation: str, at: str) -> dict:
    return {"name": name, "passed": passed, "detail": f"{name} {evaluation}", "evaluation": evaluation,
            "evaluated_at": at}  # fmt: skip


def test_the_record_shows_the_request_gates_then_later_evaluations_and_judges_the_last(client):
    change_record_sync(
        kind="promotion", source_type="promotion", source_id="9:app", app="app", environment="prod",
        gates=[
            _gate("source_healthy", False, "at request", "2026-12-01T10:00:00+00:00"),
            _gate("source_healthy", True, "at PR opening", "2026-12-01T10:05:00+00:00"),
            {"name": "required_checks", "passed": True, "detail": "3/3"},
        ],
    )  # fmt: skip
    record = ChangeRecord.objects.get(source_id="9:app")
    groups = record.gate_evaluations
    assert [(g.label, g.at.minute if g.at else None) for g in groups] == [
        ("at request", 0),
        ("at PR opening", 5),
        ("", None),
    ]
    # The request's failure stays visible; the change passed its latest evaluation.
    assert record.gates_passed is True
    client.force_login(user_with_role("auditor"))
    html = client.get(reverse("audit:change_detail", args=[record.pk])).content.decode()
    section = html[html.index("data-gate-evaluations") :]
    assert section.index("Gates at request") < section.index("source_healthy at request")
    assert section.index("source_healthy at request") < section.index("Gates at PR opening")
    assert "10:05" in section


def test_records_without_labels_keep_one_group_and_judge_all_gates():
    change_record_sync(
        kind="promotion", source_type="promotion", source_id="10:app", app="app", environment="prod",
        gates=[{"name": "a", "passed": True}, {"name": "b", "passed": False}],
    )  # fmt: skip
    record = ChangeRecord.objects.get(source_id="10:app")
    assert [g.label for g in record.gate_evaluations] == [""] and record.gates_passed is False
