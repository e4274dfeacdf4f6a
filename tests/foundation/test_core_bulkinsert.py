"""core.bulkinsert.models_copy_insert: the rows COPY stores are the ones bulk_create would store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from audit.models import ChangeRecord
from core.bulkinsert import COPY_MIN_ROWS, models_copy_insert
from inventory.models import ArgoApplication, Deployment
from tests.factories import ApplicationFactory, ArgoInstanceFactory, EnvironmentFactory

WHEN = datetime(2026, 3, 5, 7, 33, 4, tzinfo=UTC)


def _deployments(argo: ArgoApplication, n: int, *, first: int = 1) -> list[Deployment]:
    env = EnvironmentFactory(name="prod")
    return [
        Deployment(
            argo_app=argo,  # an assigned object, not an id
            history_id=first + i,
            application=argo.application,
            environment=env,
            revision=f"{i:040x}",
            revisions=[f"{i:040x}", "main"],
            deploy_started_at=None if i % 2 else WHEN,
            deployed_at=WHEN + timedelta(seconds=i),
            initiated_by="automated" if i % 3 else 'o\'neil "quoted"\ttab\\back',
            automated=bool(i % 3),
            images=[{"name": "ledger", "tag": f"1.{i}"}] if i % 2 else [],
            version=f"1.{i}",
            out_of_band=i == 0,
        )
        for i in range(n)
    ]


def _stored(ids: list[int]) -> list[dict]:
    return list(Deployment.objects.filter(pk__in=ids).order_by("history_id").values())


@pytest.mark.django_db
@pytest.mark.parametrize("n", [3, COPY_MIN_ROWS + 1])
def test_copied_rows_read_back_as_bulk_created_ones(n):
    app = ApplicationFactory(name="ledger")
    instance = ArgoInstanceFactory()
    copied_app = ArgoApplication.objects.create(instance=instance, name="ledger-prod", application=app)
    created_app = ArgoApplication.objects.create(instance=instance, name="ledger-prod-2", application=app)

    copied = _deployments(copied_app, n)
    models_copy_insert(copied)
    created = Deployment.objects.bulk_create(_deployments(created_app, n))

    assert all(d.pk is not None and not d._state.adding for d in copied)
    assert len({d.pk for d in copied + created}) == 2 * n  # ids from the same sequence, none reused
    ignore = {"id", "argo_app_id", "observed_at"}
    mine = [{k: v for k, v in row.items() if k not in ignore} for row in _stored([d.pk for d in copied])]
    theirs = [{k: v for k, v in row.items() if k not in ignore} for row in _stored([d.pk for d in created])]
    assert mine == theirs
    assert {row["argo_app_id"] for row in _stored([d.pk for d in copied])} == {copied_app.pk}
    assert Deployment.objects.get(pk=copied[0].pk).initiated_by == 'o\'neil "quoted"\ttab\\back'


@pytest.mark.django_db
def test_json_nulls_intervals_and_the_next_ids_after_a_copy():
    records = [
        ChangeRecord(
            kind="out_of_band",
            source_type="deployment",
            source_id=str(i),
            app="ledger",
            environment="prod",
            sync_result=None if i % 2 else {"phase": "Succeeded", "revision": "abc"},
            versions_after={"ledger": f"1.{i}"},
            lead_time=timedelta(minutes=i) if i % 2 else None,
            deployed_at=WHEN,
            occurred_at=WHEN,
        )
        for i in range(COPY_MIN_ROWS)
    ]
    models_copy_insert(records)
    stored = {r.source_id: r for r in ChangeRecord.objects.all()}
    assert stored["0"].sync_result == {"phase": "Succeeded", "revision": "abc"}
    assert stored["1"].sync_result is None  # SQL NULL, not a JSON null
    assert ChangeRecord.objects.filter(sync_result__isnull=True).count() == COPY_MIN_ROWS // 2
    assert stored["3"].lead_time == timedelta(minutes=3) and stored["3"].versions_after == {"ledger": "1.3"}
    after = ChangeRecord.objects.create(
        kind="out_of_band", source_type="deployment", source_id="x", app="ledger", environment="prod"
    )
    assert after.pk > max(r.pk for r in records)  # the sequence moved past the copied ids


@pytest.mark.django_db
def test_a_unique_violation_fails_the_whole_insert():
    app = ApplicationFactory(name="ledger")
    argo = ArgoApplication.objects.create(instance=ArgoInstanceFactory(), name="ledger-prod", application=app)
    models_copy_insert(_deployments(argo, COPY_MIN_ROWS))
    with pytest.raises(IntegrityError), transaction.atomic():
        models_copy_insert(_deployments(argo, COPY_MIN_ROWS, first=COPY_MIN_ROWS))  # overlaps one id
    assert Deployment.objects.count() == COPY_MIN_ROWS


@pytest.mark.django_db
def test_a_copy_is_a_fixed_number_of_statements_and_writes_through_an_insert():
    app = ApplicationFactory(name="ledger")
    argo = ArgoApplication.objects.create(instance=ArgoInstanceFactory(), name="ledger-prod", application=app)

    def statements(rows: list[Deployment]) -> list[str]:
        with CaptureQueriesContext(connection) as ctx:
            models_copy_insert(rows)
        return [q["sql"] for q in ctx.captured_queries]

    few = statements(_deployments(argo, 3))
    many = statements(_deployments(argo, COPY_MIN_ROWS, first=10))
    more = statements(_deployments(argo, 5 * COPY_MIN_ROWS, first=10 + COPY_MIN_ROWS))
    assert len(few) == 1 and few[0].startswith("INSERT INTO")
    assert len(many) == len(more) == 4
    # The write to the real table is an ordinary INSERT: counted, triggered and constrained as one.
    assert any(q.startswith('INSERT INTO "inventory_deployment"') for q in many)
    assert Deployment.objects.count() == 3 + 6 * COPY_MIN_ROWS
