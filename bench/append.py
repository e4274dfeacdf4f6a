"""Figure 6: hash-chained audit appends under concurrent writers (separate processes and connections)."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from .env import BenchEnv, setup_django
from .measure import fmt_n, fmt_p, fmt_ratio, stats
from .report import Section, verdict

TARGET = 1000.0


def _writer(env: BenchEnv, index: int, count: int, ready: Any, go: Any, out: Any) -> None:
    """One writer process: its own Django and connection, `count` appends, each its own transaction."""
    setup_django(env)
    from django.db import connection

    from audit.services import audit_event_record

    connection.ensure_connection()
    ready.put(index)
    go.wait()
    samples = []
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        audit_event_record(
            action="promotion.requested",
            target_type="promotion",
            target_id=f"{index}-{i}",
            target_label=f"promotion #{index}-{i} stage → prod",
            app=f"app-{i % 100:05d}",
            environment="prod",
            after={
                "state": "requested",
                "items": [{"app": f"app-{i % 100:05d}", "before": "1.4.2", "after": "1.4.3"}],
            },
            message="bench append",
            system_name="bench",
        )
        samples.append(time.perf_counter() - t0)
    out.put((index, start, time.perf_counter(), samples))
    connection.close()


def _round(env: BenchEnv, writers: int, per_writer: int) -> tuple[float, list[float]]:
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_writer, args=(env, i, per_writer, ready, go, out)) for i in range(writers)]
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


def run(section: Section, env: BenchEnv, *, writers: int, per_writer: int) -> None:
    from audit.models import AuditEvent
    from audit.verify import audit_chain_verify

    before = AuditEvent.objects.count()
    one_rate, one_lat = _round(env, 1, per_writer)
    rate, lat = _round(env, writers, per_writer)
    report = audit_chain_verify()
    appended = AuditEvent.objects.count() - before
    expected = per_writer * (1 + writers)
    section.row(
        f"{writers} concurrent writers \u00d7 {fmt_n(per_writer)} appends",
        f"{fmt_n(rate)} events/s; per append {fmt_p(stats(lat))}",
        reference=f"1 writer: {fmt_n(one_rate)} events/s, {fmt_p(stats(one_lat))}",
        ratio=fmt_ratio(rate, one_rate),
        target="≥ 1,000 events/s",
        verdict=verdict(rate >= TARGET, f"{rate:.0f} events/s"),
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
        "whole database chain is verified after it."
    )
