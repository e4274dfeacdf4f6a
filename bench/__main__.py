"""`python -m bench`: build synthetic fleets, measure every figure with its reference, write the table.

Sizes are parameters; the defaults are the reference run of docs/benchmarks.md and `--smoke` is the
CI-sized run (same code paths, tiny sizes, about a minute).
"""

from __future__ import annotations

import argparse
import gc
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .env import (
    DEFAULT_DB_NAME,
    ROOT,
    bench_env,
    fresh_workdir,
    machine_info,
    recreate_database,
    setup_django,
)
from .report import Section, render_markdown, render_text, write

FIGURES = {
    "1": "Poll Argo CD",
    "2": "Git ingest",
    "3": "Pages",
    "4": "Audit export",
    "5": "Promotion latency",
    "6": "Audit append",
    "7": "Freshness",
    "8": "Evidence",
}
# `--only poll,freshness` works as well as `--only 1,7`.
FIGURE_NAMES = {
    "poll": "1",
    "ingest": "2",
    "pages": "3",
    "export": "4",
    "promotion": "5",
    "append": "6",
    "freshness": "7",
    "evidence": "8",
}
SMOKE = {
    "poll_sizes": "60",
    "poll_repeats": 2,
    "poll_commits": 300,
    "commits": 2000,
    "ingest_apps": 10,
    "incremental": 20,
    "matrix_apps": "10,30",
    "app_deployments": "50,200",
    "events": "2000,10000",
    "page_requests": 3,
    "promotions": 2,
    "concurrent": 3,
    "writers": 4,
    "appends": 25,
    "freshness_sizes": "60",
    "freshness_samples": 2,
    "poll_interval": 2.0,
    "change_records": 100,
    "pdf_records": 100,
}


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny CI-sized run (same code paths, ~1 minute)")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated figures to run, by number or name, e.g. 1,7 or poll,freshness (default: all)",
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="Markdown table to write"
    )
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench", help="scratch directory (wiped)")
    p.add_argument("--db-name", default=DEFAULT_DB_NAME, help="bench database, dropped and recreated")
    p.add_argument("--keep-db", action="store_true", help="keep the bench database after the run")
    p.add_argument("--keep-workdir", action="store_true", help="keep repos and files (default: only logs)")
    g = p.add_argument_group("1. poll / 7. freshness")
    g.add_argument(
        "--poll-sizes",
        default="1000,5000,10000",
        help="Argo CD app counts (apps x 3 env x 2 clusters); the targets are for 10000",
    )
    g.add_argument("--poll-repeats", type=int, default=5, help="no-change cycles and reference fetches")
    g.add_argument("--poll-commits", type=int, default=1000, help="history of each poll fleet's repo")
    g.add_argument("--freshness-sizes", default="10000", help="poll fleet sizes that also measure freshness")
    g.add_argument("--freshness-samples", type=int, default=8)
    g.add_argument(
        "--poll-interval",
        type=float,
        default=30.0,
        help="seconds between polls for freshness (the portal's default POLL_INTERVAL_SECONDS)",
    )
    g = p.add_argument_group("2. git ingest")
    g.add_argument("--commits", type=int, default=100_000)
    g.add_argument("--ingest-apps", type=int, default=50)
    g.add_argument("--incremental", type=int, default=100)
    g = p.add_argument_group("3. pages / 4. export")
    g.add_argument(
        "--matrix-apps", default="1000,10000", help="two sizes: apps (\u00d7 3 env \u00d7 2 clusters)"
    )
    g.add_argument("--app-deployments", default="500,5000", help="two sizes: deployments of one app")
    g.add_argument("--events", default="100000,1000000", help="audit list sizes; export uses the last")
    g.add_argument("--page-requests", type=int, default=20)
    g.add_argument("--audit-filter", default="env=prod&action=promotion")
    g = p.add_argument_group("5. promotions")
    g.add_argument("--promotions", type=int, default=50, help="sequential requests")
    g.add_argument("--concurrent", type=int, default=50, help="concurrent promotions of distinct apps")
    g.add_argument("--worker-concurrency", type=int, default=4)
    g = p.add_argument_group("6. audit append")
    g.add_argument("--writers", type=int, default=8)
    g.add_argument("--appends", type=int, default=500, help="appends per writer")
    g = p.add_argument_group("8. evidence")
    g.add_argument("--change-records", type=int, default=10_000)
    g.add_argument(
        "--pdf-records",
        type=int,
        default=10_000,
        help="the PDF covers this many of them (fewer: projected to all; default: the whole quarter)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        given = {
            a.split("=", 1)[0].lstrip("-").replace("-", "_")
            for a in (argv or sys.argv[1:])
            if a.startswith("--")
        }
        for key, value in SMOKE.items():
            if key not in given:
                setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = {FIGURE_NAMES.get(x.strip(), x.strip()) for x in args.only.split(",") if x.strip()} or set(FIGURES)
    started = time.perf_counter()
    env = bench_env(db_name=args.db_name, workdir=args.workdir)
    fresh_workdir(env.workdir)
    print(f"bench: database {env.db_name}, workdir {env.workdir}", flush=True)
    recreate_database(env)
    setup_django(env)
    machine = machine_info()
    sections = {k: Section(k, v) for k, v in FIGURES.items() if k in only}
    failed: list[str] = []

    def step(key: str, fn: Callable[[Section], None]) -> None:
        if key not in sections:
            return
        section = sections[key]
        print(f"bench: {key}. {section.title} ...", flush=True)
        # Each figure starts from a collected heap: a figure must not pay for the garbage the one
        # before left (the 10,000-app fleets leave millions of objects; the first full collection
        # after them took seconds of the next figure, the Git ingest's).
        gc.collect()
        # ... and from a checkpointed database (as pgbench does before a run): a checkpoint that the
        # figures before made due must not land in this one's seconds (its full-page writes).
        from django.db import DatabaseError, connection

        try:
            with connection.cursor() as cursor:
                cursor.execute("CHECKPOINT")
        except DatabaseError:  # a role without pg_checkpoint: the figure runs as before
            print("bench: CHECKPOINT refused; figures may pay for earlier ones' checkpoints", flush=True)
        start = time.perf_counter()
        try:
            fn(section)
        except Exception as exc:
            failed.append(key)
            section.row(
                "run", f"FAILED: {type(exc).__name__}: {exc}"[:300], verdict="not measured: the run failed"
            )
            traceback.print_exc()
        section.seconds = time.perf_counter() - start
        print(f"bench: {key}. done in {section.seconds:.0f} s", flush=True)
        print(render_text([section]), flush=True)

    from . import append, data, evidence, export, freshness, ingest, pages, poll, promote

    step("6", lambda s: append.run(s, env, writers=args.writers, per_writer=args.appends))

    fresh_sizes = set(_ints(args.freshness_sizes)) if "7" in sections else set()

    def after_poll(fleet) -> None:  # freshness reuses a polled fleet (its first poll is the slow part)
        if any(abs(fleet.argo_apps - n) <= 6 for n in fresh_sizes):
            step(
                "7",
                lambda s: freshness.run(
                    s, env, fleet, samples=args.freshness_samples, interval=args.poll_interval
                ),
            )

    if "1" in sections or "7" in sections:
        sizes = _ints(args.poll_sizes) if "1" in sections else sorted(fresh_sizes)
        step("1", lambda s: poll.run(s, env.workdir, sizes=sizes, commits=args.poll_commits,
                                     repeats=args.poll_repeats, after=after_poll))  # fmt: skip
        if "1" not in sections:
            poll.run(Section("1", "poll"), env.workdir, sizes=sizes, commits=args.poll_commits, repeats=1,
                     after=after_poll)  # fmt: skip
    step("2", lambda s: ingest.run(s, env.workdir, commits=args.commits, apps=args.ingest_apps,
                                   incremental=args.incremental, repeats=3))  # fmt: skip
    step("5", lambda s: promote.run(s, env, sequential=args.promotions, concurrent=args.concurrent,
                                    worker_concurrency=args.worker_concurrency))  # fmt: skip
    step("8", lambda s: evidence.run(s, env, records=args.change_records, pdf_records=args.pdf_records))
    if "3" in sections or "4" in sections:
        data.wipe_ledger()
    event_sizes = _ints(args.events)
    step("3", lambda s: pages.run(s, matrix_apps=_ints(args.matrix_apps), app_deployments=_ints(args.app_deployments),
                                  events=event_sizes, requests=args.page_requests, audit_filter=args.audit_filter))  # fmt: skip
    step("4", lambda s: export.run(s, env, events=event_sizes[-1]))

    from .fleet import GENERATOR_NOTES

    if "1" in sections:
        sections["1"].notes += GENERATOR_NOTES
    from .env import load_average

    machine["load average at end"] = load_average()
    total = time.perf_counter() - started
    ordered = [sections[k] for k in sorted(sections)]
    cmdline = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])).strip()
    write(args.out, render_markdown(ordered, machine, cmdline, total, args.smoke))
    print(render_text(ordered))
    print(
        f"bench: wrote {args.out} ({total / 60:.1f} min)"
        + (f"; FAILED figures: {', '.join(failed)}" if failed else "")
    )
    if not args.keep_db:
        _drop(env)
    if not args.keep_workdir:
        _clean(env.workdir)
    return 1 if failed else 0


def _clean(workdir: Path) -> None:
    """Remove the generated repos, mirrors and exports (hundreds of MB); keep the logs."""
    import shutil

    for path in sorted(workdir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.suffix != ".log":
            path.unlink(missing_ok=True)
    for path in workdir.iterdir():
        if path.is_dir() and not any(path.rglob("*.log")):
            shutil.rmtree(path, ignore_errors=True)


def _drop(env) -> None:
    from django.db import connections

    connections.close_all()
    try:
        import psycopg

        with psycopg.connect(env.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{env.db_name}" WITH (FORCE)')
    except Exception as exc:  # the run already succeeded; a leftover database is harmless
        print(f"bench: could not drop {env.db_name}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
