"""Figure 1: polling Argo CD at fleet sizes, first cycle and no-change cycle, against fetch+parse."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from .fleet import ARGOCD_TOKEN, Fleet, build_fleet, configure_portal, reset_inventory
from .measure import ByteCountingSession, count_sql, fmt_bytes, fmt_n, fmt_p, fmt_ratio, fmt_s, stats
from .report import Section, verdict

BOOKKEEPING = ("inventory_argoinstance",)


def _first_verdict(seconds: float, size: int) -> str:
    """The target is for 10,000 apps; a smaller fleet that already needs 20 s misses it for sure."""
    if seconds >= 20:
        return f"MISSED: {seconds:.0f} s already at {size:,} apps"
    if size >= 10000:
        return "met"
    return "— (below the target size)"


def _client(fleet, session):
    from integrations.argocd import ArgoCDClient

    return ArgoCDClient(fleet.argocd.base_url, ARGOCD_TOKEN, allow_http=True, session=session)


def _reference(fleet, session: ByteCountingSession) -> tuple[float, int]:
    """Bare HTTP GET of the list with the poller's `fields`, then json.loads: the floor of a poll."""
    from integrations.argocd import DEFAULT_LIST_FIELDS

    session.reset()
    start = time.perf_counter()
    resp = session.get(
        f"{fleet.argocd.base_url}/api/v1/applications",
        params={"fields": ",".join(DEFAULT_LIST_FIELDS)},
        headers={"Authorization": f"Bearer {ARGOCD_TOKEN}", "Accept": "application/json"},
        timeout=120,
    )
    items = json.loads(resp.content)["items"]
    elapsed = time.perf_counter() - start
    assert len(items) == fleet.argo_apps
    return elapsed, len(resp.content)


def _poll(fleet, session: ByteCountingSession):
    from inventory.poll import instance_poll

    session.reset()
    with count_sql() as sql:
        start = time.perf_counter()
        result = instance_poll(instance_id=fleet.instance_id, client=_client(fleet, session))
        elapsed = time.perf_counter() - start
    if not result.ok:
        raise RuntimeError(f"poll failed: {result.error}")
    return elapsed, session.bytes_received, session.requests_sent, sql, result


def run(
    section: Section,
    workdir: Path,
    *,
    sizes: list[int],
    commits: int,
    repeats: int,
    after: Callable[[Fleet], None] | None = None,
) -> None:
    from inventory.ingest import repository_ingest

    section.note(
        "Fleets are generated with sandbox.repogen (apps \u00d7 3 environments \u00d7 2 clusters) and served by the "
        "in-process Argo CD emulator; the portal is configured from config/sandbox.yaml and the repository "
        "is ingested before the first poll (git first, as `manage.py poll` does). Each size starts from an "
        "empty inventory."
    )
    section.note(
        "Bytes are response bodies read by the client (a requests response hook); rows written are the "
        "rowcounts of INSERT/UPDATE/DELETE (connection.execute_wrapper). The instance's own bookkeeping "
        "row (claim + last poll status, 2 row updates per cycle) is shown separately from inventory rows."
    )
    section.note(
        f"No-change cycle and reference: {repeats} runs each, alternating; the emulator is settled first "
        "(no sync in flight), so nothing changed between cycles."
    )
    for size in sizes:
        fleet = build_fleet(workdir, name=f"poll-{size}", argo_apps=size, commits=max(commits, size // 2))
        try:
            reset_inventory()
            configure_portal(fleet)
            ingest = repository_ingest(repository_id=fleet.repository_id)
            if not ingest.ok:
                raise RuntimeError(f"ingest failed: {ingest.error}")
            n = fleet.argo_apps
            session = ByteCountingSession()
            first_s, first_bytes, first_reqs, first_sql, first = _poll(fleet, session)
            fleet.settle()
            _poll(fleet, session)  # absorb anything the settle changed: the next cycles change nothing
            nochange, refs = [], []
            last = None
            for _ in range(repeats):
                ref_s, ref_bytes = _reference(fleet, session)
                refs.append(ref_s)
                s, nbytes, nreqs, sql, result = _poll(fleet, session)
                nochange.append(s)
                last = (nbytes, nreqs, sql, result, ref_bytes)
            assert last is not None
            nbytes, nreqs, sql, result, ref_bytes = last
            ref = stats(refs)
            nc = stats(nochange)
            label = f"{fmt_n(n)} apps"
            section.row(
                f"{label}: first cycle",
                f"{fmt_s(first_s)}; {fmt_bytes(first_bytes)} in {fmt_n(first_reqs)} requests; "
                f"{fmt_n(first_sql.written_except(*BOOKKEEPING))} rows written; {fmt_n(first_sql.statements)} SQL",
                reference=f"fetch+parse {fmt_s(ref.p50)}, {fmt_bytes(ref_bytes)}",
                ratio=fmt_ratio(first_s, ref.p50),
                target="< 20 s at 10,000 apps",
                verdict=_first_verdict(first_s, size),
            )
            written = sql.written_except(*BOOKKEEPING)
            ratio = nc.p50 / ref.p50
            section.row(
                f"{label}: no-change cycle",
                f"{fmt_p(nc)}; {fmt_bytes(nbytes)} in {fmt_n(nreqs)} requests; {fmt_n(written)} rows written "
                f"(+{sql.rows_written.get('inventory_argoinstance', 0)} bookkeeping); {fmt_n(sql.statements)} SQL",
                reference=f"fetch+parse {fmt_p(ref)}",
                ratio=fmt_ratio(nc.p50, ref.p50),
                target="writes nothing, ≤ 1.5\u00d7 fetch+parse",
                verdict=verdict(
                    written == 0 and ratio <= 1.5,
                    ", ".join(
                        x
                        for x in (
                            f"{written} rows written" if written else "",
                            f"{ratio:.2f}\u00d7 (> 1.5\u00d7)" if ratio > 1.5 else "",
                        )
                        if x
                    ),
                ),
            )
            section.note(
                f"{label}: repo generated in {fleet.generate_seconds:.1f} s ({fleet.repo.commits} commits), "
                f"emulator loaded in {fleet.emulator_seconds:.1f} s; first cycle stored {first.apps_new} apps "
                f"and {first.new_deployments} deployments; first-cycle rows by table: "
                + ", ".join(f"{t} {c}" for t, c in sorted(first_sql.rows_written.items()))
                + "."
            )
            if after is not None:
                after(fleet)
        finally:
            fleet.stop()
        largest = (size, first_s)
    if max(sizes) < 10000:
        size, first_s = largest
        section.note(
            f"10,000 apps is left out of the default sizes (`--poll-sizes 1000,5000,10000` measures it): "
            f"the emulator builds that fleet in about a minute, but the portal's first cycle grows linearly "
            f"({first_s:.0f} s at {size:,} apps here) and would take about {first_s / size * 10000 / 60:.0f} "
            "min at 10,000, beyond the 15-minute budget of the default run; the 20 s target is missed anyway."
        )
    section.note(
        "Why the first cycle is slow (cProfile of a first cycle at 1,000 apps, 35 s profiled): 85% is "
        "inventory.deployments.deployments_record, called once per app, each in its own transaction (SELECT "
        "\u2026 FOR UPDATE, known history, commits, touches): (a) HistoricVersions reads each historic "
        "kustomization.yaml with git subprocesses (rev-parse + cat-file, 13%) and parses it with "
        "pure-Python ruamel.yaml (18%); (b) one audit_event_record per deployment (19%, of which insight's "
        "post-commit notify_event 8%); (c) change records for out-of-band deployments (6%); the rest is "
        "the per-app queries. The N full GETs are 4%. Proposed fix: one `git cat-file --batch` per poll "
        "for all (revision, path) pairs, newTag/digest read with a regex or the C YAML loader and cached "
        "by blob id; one pass over all apps (known history ids in one query, one bulk insert); a batched "
        "audit append (one lock, one head read, one multi-row INSERT of the chained rows)."
    )
    section.note(
        "Why the no-change cycle costs more than fetch+parse (cProfile, 1,000 apps, 229 ms per cycle): "
        "~40% is integrations.argocd.parse_application turning every list item into typed dataclasses "
        "(JsonReader), which the reference does not do, ~35% the HTTP fetch itself, the rest the state "
        "hashes and two small queries. Proposed fix: hash each raw list item first and build the typed "
        "app only for the items whose hash changed."
    )
