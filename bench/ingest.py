"""Figure 2: Git ingest of a large repository, first and incremental, against `git log --name-status`."""

from __future__ import annotations

import gc
import re
import subprocess
import time
from pathlib import Path

from .fleet import generate
from .measure import count_sql, fmt_n, fmt_ratio, fmt_s
from .report import Section, verdict

_TAG = re.compile(r'newTag:\s*"?([^"\n]*)"?')


def _git(repo: Path, *args: str, input_bytes: bytes | None = None) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args], input=input_bytes, capture_output=True, check=True
    ).stdout.decode()


def append_commits(repo: Path, count: int, apps: list[str]) -> str:
    """Append `count` commits to main with one `git fast-import` (each bumps one app's tag in dev)."""
    head = _git(repo, "rev-parse", "refs/heads/main").strip()
    stream = bytearray()
    when = int(_git(repo, "log", "-1", "--format=%ct", head).strip()) + 60
    for i in range(count):
        app = apps[i % len(apps)]
        path = f"environments/dev/{app}/kustomization.yaml"
        text = f'resources:\n- ../../../apps/{app}/base\nimages:\n- name: registry.example.com/acme/{app}\n  newTag: "9.{i // 100}.{i % 100}"\n'
        body = text.encode()
        msg = f"ci: bump {app} to 9.{i // 100}.{i % 100} in dev\n".encode()
        stream += b"commit refs/heads/main\n"
        stream += f"committer Bench CI <ci@example.com> {when + i * 60} +0000\n".encode()
        stream += f"data {len(msg)}\n".encode() + msg
        if i == 0:
            stream += f"from {head}\n".encode()
        stream += f"M 100644 inline {path}\n".encode() + f"data {len(body)}\n".encode() + body + b"\n"
    subprocess.run(["git", "--git-dir", str(repo), "fast-import", "--quiet"], input=bytes(stream), check=True)
    return _git(repo, "rev-parse", "refs/heads/main").strip()


def _git_log_seconds(repo: Path, rev_range: list[str]) -> float:
    start = time.perf_counter()
    with open("/dev/null", "wb") as devnull:
        subprocess.run(
            ["git", "--git-dir", str(repo), "log", "--name-status", "--no-renames", *rev_range, "--"],
            stdout=devnull,
            check=True,
        )
    return time.perf_counter() - start


def run(section: Section, workdir: Path, *, commits: int, apps: int, incremental: int, repeats: int) -> None:
    from inventory.ingest import repository_ingest
    from inventory.mirrors import mirror_for
    from inventory.models import Commit, CommitTouch, Environment, GitRepository

    start = time.perf_counter()
    generated = generate(workdir / "ingest" / "acme" / "gitops.git", apps=apps, commits=commits, seed=3)
    gen_s = time.perf_counter() - start
    bare = Path(generated.path)
    for order, name in enumerate(("dev", "stage", "prod"), start=1):
        Environment.objects.get_or_create(name=name, defaults={"order": order * 10})
    repo = GitRepository.objects.create(
        name="bench-ingest",
        url=f"file://{bare}",
        full_name="acme/gitops",
        web_url="http://forge.example/acme/gitops",
    )
    mirror = mirror_for(repo)
    start = time.perf_counter()
    mirror.ensure()  # the clone is not part of the ingest figure (the reference reads a local repo too)
    clone_s = time.perf_counter() - start
    head = mirror.branch_head("main")

    gc.collect()  # what generating the history left is not the ingest's to collect (bench/__main__.py)
    with count_sql() as sql:
        start = time.perf_counter()
        first = repository_ingest(repository_id=repo.pk)
        first_s = time.perf_counter() - start
    if not first.ok:
        raise RuntimeError(f"ingest failed: {first.error}")
    refs = [_git_log_seconds(mirror.path, ["refs/heads/main"]) for _ in range(repeats)]
    ref_s = sorted(refs)[len(refs) // 2]
    stored = Commit.objects.filter(repository=repo).count()
    ratio = first_s / ref_s
    section.row(
        f"first ingest, {fmt_n(stored)} commits",
        f"{fmt_s(first_s)} ({fmt_n(stored / first_s)} commits/s; {fmt_n(first.touches)} touches; "
        f"{fmt_n(sql.statements)} SQL)",
        reference=f"git log --name-status {fmt_s(ref_s)}",
        ratio=fmt_ratio(first_s, ref_s),
        target="≤ 3\u00d7 git log",
        verdict=verdict(ratio <= 3, f"{ratio:.1f}\u00d7 git log (> 3\u00d7)"),
    )

    app_names = [a.name for a in generated.apps]
    new_head = append_commits(bare, incremental, app_names)
    with count_sql() as sql:
        start = time.perf_counter()
        inc = repository_ingest(repository_id=repo.pk)
        inc_s = time.perf_counter() - start
    if not inc.ok:
        raise RuntimeError(f"incremental ingest failed: {inc.error}")
    refs = [_git_log_seconds(mirror.path, [f"{head}..{new_head}"]) for _ in range(repeats)]
    inc_ref = sorted(refs)[len(refs) // 2]
    section.row(
        f"incremental ingest, {inc.commits} new commits",
        f"{fmt_s(inc_s)} (fetch included; {fmt_n(sql.statements)} SQL)",
        reference=f"git log --name-status {fmt_s(inc_ref)}",
        ratio=fmt_ratio(inc_s, inc_ref),
        target="< 2 s",
        verdict=verdict(inc_s < 2, f"{inc_s:.1f} s"),
    )
    assert Commit.objects.filter(repository=repo).count() == stored + incremental
    section.note(
        f"Repository: sandbox.repogen, {fmt_n(commits)} commits over {apps} apps \u00d7 3 environments "
        f"(generated in {gen_s:.0f} s, mirrored with `git fetch` from file:// in {clone_s:.1f} s, not "
        "counted). First ingest = `repository_ingest` on the fresh mirror (its fetch is a no-op); "
        f"incremental = {incremental} commits appended to the origin with `git fast-import`, then "
        "`repository_ingest` (fetch + log + inserts)."
    )
    section.note(
        "Reference: `git log --name-status --no-renames` of the same range over the same bare mirror to "
        f"/dev/null (median of {repeats}). Touches stored: "
        f"{fmt_n(CommitTouch.objects.filter(commit__repository=repo).count())}."
    )
    section.note(
        "How: a repository with no commits stored yet is ingested by COPY straight into the commit "
        "and touch tables, in one transaction (inventory.ingest._first_ingest); a worker killed "
        "midway leaves nothing and its retry starts over, and commits stored meanwhile by another "
        "ingest make the COPY fail and the ingest go the incremental way. Four CPU-bound tasks run "
        "at once on the 2 cores: git writes `git log -z --raw --no-abbrev --topo-order --reverse` "
        "(the paths with their blob ids against the first parent); the main thread splits each "
        "commit's record once and formats COPY text (integrations.gitrepo parse_raw_log_entries); a "
        "process of its own (inventory.carried_worker, from the second batch of 2,000 commits on) "
        "reads the kustomizations' new blobs with `git cat-file --batch` and decides per touch "
        "whether the commit changed what a promotion carries (`CommitTouch.carried`); a writer "
        "thread sends the COPYs, and PostgreSQL stores the rows. SQL counts the calling thread's "
        "statements, not the writer's COPYs and id reads (3 per 2,000 commits)."
    )
    section.note(
        "Why each part: the mirror writes a commit-graph after each fetch (fetch.writeCommitGraph), "
        "so the topological walk starts streaming at once instead of after 0.5 s of parsing every "
        "commit object. A kustomize-images value is a function of the text alone, cached by blob id "
        "(the new blob of one commit is the old one of the next); a kustomization whose lines around "
        "its `images:` block are those of a text read before is valued from the block alone "
        "(inventory.carried.images_value_in_frame), others by top-level sections each read once; "
        "all equal to `carried_value` (fuzzed, and generated histories ingested both ways in "
        "tests/inventory, with the values process killed midway too). The touches' three foreign "
        "keys are not checked by PostgreSQL row by row (Django's CASCADE still deletes touches with "
        "their commit, app or environment; the ingest writes touches only with the ids it just "
        "read): those 300,000 trigger lookups and row locks were half of PostgreSQL's CPU here. "
        "Profile of the run before these three changes (same machine): ingest process 3.3\u20133.6 s "
        "CPU, of which the main thread was the longest single task (parse and COPY text 1.6 s, "
        "carried values 1.7 s), git 3.0 s, PostgreSQL 3.0 s; after: main thread about 1.9 s, values "
        "process about 1.3 s, PostgreSQL about 1.8 s. The incremental ingest (rows already stored: "
        "temporary table + ON CONFLICT) is dominated by its fixed costs (fetch, a few queries); it "
        "reads each carried file at the commit and its first parent, a batch at a time with one "
        "`files_at`."
    )
