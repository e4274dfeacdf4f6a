"""Figure 6: hash-chained audit appends under concurrent writers (separate processes and connections)."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from .env import BenchEnv, setup_django
from .measure import fmt_n, fmt_p, fmt_ratio, stats
from .report import Section, verdict

TARGET = 1000.0
PLAIN_BASE = 1_000_000_000


def _plain_insert(index: int, i: int) -> None:
    """The reference: the same row inserted and committed alone, without the chain (no lock, no head)."""
    import uuid

    from django.utils import timezone

    from audit.models import AuditEvent

    AuditEvent(
        sequence=PLAIN_BASE + index * 1_000_000 + i,
        created_at=timezone.now(),
        actor_name="system:bench",
        actor_type="system",
        action="promotion.requested",
        target_type="promotion",
        target_id=f"{index}-{i}",
        target_label=f"promotion #{index}-{i} stage \u2192 prod",
        app=f"app-{i % 100:05d}",
        environment="prod",
        after={
            "state": "requested",
            "items": [{"app": f"app-{i % 100:05d}", "before": "1.4.2", "after": "1.4.3"}],
        },
        message="bench plain insert",
        prev_hash="0" * 64,
        hash=(uuid.uuid4().hex * 2),
    ).save(force_insert=True)


def _event(index: int, i: int) -> dict[str, Any]:
    return {
        "action": "promotion.requested",
        "target_type": "promotion",
        "target_id": f"{index}-{i}",
        "target_label": f"promotion #{index}-{i} stage → prod",
        "app": f"app-{i % 100:05d}",
        "environment": "prod",
        "after": {
            "state": "requested",
            "items": [{"app": f"app-{i % 100:05d}", "before": "1.4.2", "after": "1.4.3"}],
        },
        "message": "bench append",
        "system_name": "bench",
    }


def _writer(
    env: BenchEnv, index: int, count: int, ready: Any, go: Any, out: Any, plain: bool = False, batch: int = 0
) -> None:
    """One writer process: its own Django and connection, `count` appends, each its own transaction
    (with `batch`: `count` events in transactions of `batch` events, `audit_events_record`)."""
    setup_django(env)
    from django.db import connection

    from audit.services import audit_event_record, audit_events_record

    connection.ensure_connection()
    ready.put(index)
    go.wait()
    samples = []
    start = time.perf_counter()
    if batch:
        for first in range(0, count, batch):
            t0 = time.perf_counter()
            audit_events_record([_event(index, i) for i in range(first, min(first + batch, count))])
            samples.append(time.perf_counter() - t0)
        out.put((index, start, time.perf_counter(), samples))
        connection.close()
        return
    for i in range(count):
        t0 = time.perf_counter()
        if plain:
            _plain_insert(index, i)
            samples.append(time.perf_counter() - t0)
            continue
        audit_event_record(**_event(index, i))
        samples.append(time.perf_counter() - t0)
    out.put((index, start, time.perf_counter(), samples))
    connection.close()


def _round(
    env: BenchEnv, writers: int, per_writer: int, *, plain: bool = False, batch: int = 0
) -> tuple[float, list[float]]:
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_writer, args=(env, i, per_writer, ready, go, out, plain, batch))
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    first = min(r[1] for r in results)
    last = max(r[2] for r in results)
    latencies = [s for r in results for s in r[3]]
    return writers * per_writer / (last - first), latencies


def run(section: Section, env: BenchEnv, *, writers: int, per_writer: int, batch: int = 50) -> None:
    from django.db import connection

    from audit.models import AuditEvent
    from audit.verify import audit_chain_verify

    before = AuditEvent.objects.count()
    one_rate, one_lat = _round(env, 1, per_writer)
    rate, lat = _round(env, writers, per_writer)
    batched = min(batch, per_writer)
    batch_rate, batch_lat = _round(env, writers, per_writer * 4, batch=batched)
    report = audit_chain_verify()
    appended = AuditEvent.objects.count() - before
    expected = per_writer * (1 + writers) + per_writer * 4 * writers
    plain_rate, plain_lat = _round(env, writers, per_writer, plain=True)
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        sync_commit = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'audit_auditevent'")
        indexes = cursor.fetchone()[0]
    section.row(
        f"{writers} concurrent writers \u00d7 {fmt_n(per_writer)} single-event appends",
        f"{fmt_n(rate)} events/s; per append {fmt_p(stats(lat))}",
        reference=f"1 writer: {fmt_n(one_rate)} events/s, {fmt_p(stats(one_lat))}; same rows without the "
        f"chain, {writers} writers: {fmt_n(plain_rate)} rows/s, {fmt_p(stats(plain_lat))}",
        ratio=f"{fmt_ratio(rate, one_rate)} 1 writer; {fmt_ratio(rate, plain_rate)} unchained",
        target="— (one commit per event: bounded by the commit round trip)",
        verdict="reference",
    )
    section.row(
        f"{writers} concurrent writers \u00d7 {fmt_n(per_writer * 4)} events in batches of {batched} "
        "(`audit_events_record`)",
        f"{fmt_n(batch_rate)} events/s; per batch {fmt_p(stats(batch_lat))}",
        reference=f"single-event appends, {writers} writers: {fmt_n(rate)} events/s",
        ratio=fmt_ratio(batch_rate, rate),
        target="≥ 1,000 events/s",
        verdict=verdict(batch_rate >= TARGET, f"{batch_rate:.0f} events/s"),
    )
    section.row(
        "chain after the concurrent appends",
        f"{fmt_n(appended)} events appended (expected {fmt_n(expected)}); audit_chain_verify: "
        + ("OK" if report.ok else f"BROKEN at {report.first_problem}"),
        target="every event chained",
        verdict=verdict(report.ok and appended == expected, "chain broken or events lost"),
    )
    section.note(
        "Writers are separate processes (multiprocessing spawn), each with its own Django and PostgreSQL "
        "connection, released together; each append is `audit_event_record(...)` in its own transaction "
        "(advisory lock, read the head, insert). Rate = all appends / (first start → last finish). "
        "Reference: the same appends from one writer. The ledger is empty before this figure and the "
        "whole database chain is verified after it. Second reference: the same rows inserted by the same "
        "writers, each its own INSERT + COMMIT, without the chain (no advisory lock, no head read, "
        f"synthetic sequence/hash; left in the ledger, which later figures rebuild). synchronous_commit = {sync_commit}."
    )
    section.note(
        "Why single-event appends stay slow: appends are serialised by a transaction-level advisory "
        "lock held from the head read until COMMIT, so the chain advances by one event per commit "
        "round trip (WAL flush included) whatever the number of writers; more writers only add lock "
        f"waits and CPU contention (2 cores here). Each event also updates {indexes} indexes on "
        "audit_auditevent. Writers with many facts at once (the Argo CD poller's deployments, "
        "`audit_events_record`) append them with one lock, one head read and one multi-row INSERT: "
        "one commit carries the batch, and insight's notifications read the subscriptions once per "
        "batch instead of once per event."
    )
