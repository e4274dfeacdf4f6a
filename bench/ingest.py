"""Figure 2: Git ingest of a large repository, first and incremental, against `git log --name-status`."""

from __future__ import annotations

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
        "and touch tables, in one transaction (integrations.gitrepo parse_log_entries: each commit's "
        "record decoded and split once, no objects per file; inventory.ingest._first_ingest). The main "
        "thread parses `git log -z --name-status` and formats COPY text while a writer thread sends "
        "the COPYs (psycopg waits without the GIL), so git, Python and PostgreSQL run at once; the "
        "foreign keys are checked per COPY (SET CONSTRAINTS … IMMEDIATE), not all at the commit after "
        "everything else, and the commits' ids come back by seq for their touches. Three foreign-key "
        "indexes that a unique constraint already starts with are gone (one index fewer per commit, "
        "two per touch). A worker killed midway leaves nothing (its retry starts over); commits "
        "stored meanwhile by another ingest make the COPY fail and the ingest goes the incremental "
        "way. SQL counts the calling thread's statements, not the writer's COPYs and id reads (3 per "
        "2,000 commits). Before (cProfile, 100,000 commits): a temporary table and INSERT … ON "
        "CONFLICT RETURNING per batch of 2,000, all in one thread: half the time waiting for the "
        "database (a third of that the 370,000 deferred foreign-key checks at each batch's commit), "
        "a fifth waiting for git (stalled on a full pipe while the database worked); after, the "
        "writer is the busy one (80% of the run: touches 55%, commits 40%, id reads 3%) and the "
        "main thread mostly waits for git. Same loaded machine (load 6\u201310 on 2 cores), before "
        "`CommitTouch.carried` existed: 10.5\u00d7 git log before, 2.6\u00d7 and 2.8\u00d7 after (left: "
        "PostgreSQL's per-row work, 4 foreign-key checks and 7 index entries per commit and touch). "
        "With `carried` (below) it was 32.6\u00d7 on main and 8.0\u00d7 with blob-id caching and "
        "`files_at` tree reads. Now the first ingest reads `git log -z --raw --no-abbrev` instead of "
        "`--name-status` (same run, same paths, plus each file's blob ids against the first parent: "
        "integrations.gitrepo parse_raw_log_entries), so a touch of a carried file needs no tree "
        "read: the blobs not seen yet are read with one `git cat-file --batch` per batch, each once, "
        "and values are cached by blob id (the new blob of one commit is the old one of the next). "
        "A kustomize-images value is a function of the text alone, cached by blob id as comparable "
        "data (no JSON and sha256 per text; the same blob on both sides, a mode change, needs no "
        "read). A kustomization whose lines around its `images:` block are those of any text read "
        "before is valued from the block alone, the plainest blocks with one regular expression "
        "(inventory.carried.images_value_in_frame); a text whose other lines changed is read by "
        "top-level sections, each read once (simple_yaml_by_sections), not three full parses. All "
        "equal to `carried_value`: fuzzed, and a generated history of tricky kustomizations is "
        "ingested both ways in tests/inventory (that fuzz found a block ending at a column-0 "
        "comment, wrongly trusted before). A batch's blobs are read by `git cat-file --batch` into "
        "a file while the next batch is parsed, and the log's pipe is 1 MiB, so git runs ahead "
        "while Python values a batch. Measured on the shared 2-core machine (load 3\u20138, other "
        "benches running), main and this alternating, full size: main 4.0\u00d7\u20139.2\u00d7 "
        "(median 6.1\u00d7), this 2.5\u00d7\u20135.7\u00d7 (median 3.6\u00d7); the ingest "
        "process's own CPU went from 6.7\u20138.0 s to 3.1\u20133.6 s, PostgreSQL's backend about "
        "2.8 s, git about 2.9 s (the log with --topo-order --reverse and messages costs 0.5 s more "
        "than the reference's). Left: on 2 cores the three processes' CPU (about 9 s) bounds the "
        "wall time near 4.5 s, 2.3\u00d7 a quiet git log; the main thread (log parse and COPY text "
        "about 1.6 s, carried values about 1.7 s) is the longest single task. The "
        "incremental ingest (rows already stored: temporary table + ON CONFLICT) is "
        "dominated by its fixed costs (fetch, a few queries). A touch of a "
        "file a promotion copies (inventory.carried: the overlay's kustomization, values file or copied "
        "files) in the incremental ingest reads that file at the commit and its first parent, all of a batch with one "
        "`files_at` (two `git cat-file --batch` runs), to store whether the commit changed what a "
        "promotion carries (`CommitTouch.carried`)."
    )
