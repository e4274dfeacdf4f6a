"""First ingest (COPY straight into the tables) stores exactly what the incremental ingest stores."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any, cast

import pytest
from django.db import IntegrityError, connection

import inventory.ingest as ingest
from integrations.gitrepo import parse_log_entries
from inventory.ingest import repository_ingest
from inventory.mirrors import mirror_for
from inventory.models import Commit, CommitTouch, Environment, GitRepository
from tests.factories import ApplicationFactory, EnvironmentFactory, GitRepositoryFactory

_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    **{
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "Dev"), ("EMAIL", "d@x"))
    },
}


def _git(cwd: Path, *args: str, **env: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env={**_ENV, **env}, check=True, capture_output=True)
    return out.stdout.decode()


def _commit(work: Path, files: dict[str, str], message: str, author: str = "Dev One") -> str:
    for path, text in files.items():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    _git(work, "add", "-A")
    (work.parent / "msg").write_bytes(message.encode())
    who = {"GIT_AUTHOR_NAME": author, "GIT_AUTHOR_EMAIL": "dev@example.com"}
    who |= {"GIT_COMMITTER_NAME": "CI\\bot", "GIT_COMMITTER_EMAIL": "ci@example.com"}
    _git(work, "commit", "-q", "--allow-empty", "--cleanup=verbatim", "-F", str(work.parent / "msg"), **who)
    return _git(work, "rev-parse", "HEAD").strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A history with what COPY text and JSON must escape, merges, portal trailers, two branches."""
    bare, work = tmp_path / "origin.git", tmp_path / "work"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    _git(tmp_path, "clone", "-q", str(bare), str(work))
    _git(work, "checkout", "-q", "-b", "main")
    _commit(work, {"apps/checkout/base/k.yaml": "a: 1\n"}, "root\n")
    for i in range(7):
        _commit(
            work, {f"environments/dev/checkout/k{i}.yaml": f"v: {i}\n"}, f"bump {i}\n\nbody\ttab\\slash\r\n"
        )
    weird = {
        'environments/dev/pay"ments/quote.yaml': "q\n",
        "environments/dev/payments/back\\slash.yaml": "b\n",
        "environments/dev/payments/tab\there.yaml": "t\n",
        "environments/dev/payments/ünï.yaml": "u\n",
        f"environments/dev/{'l' * 210}/too-long-an-app-name.yaml": "l\n",  # no touch stored
    }
    _commit(work, weird, "weird paths\n\nPromotion-Id: 42\n", author="Ann\tTab \\ " + "x" * 250)
    _commit(work, {f"environments/stage/orders/f{i}.yaml": "x\n" for i in range(60)}, "sixty files\n")
    _commit(work, {}, "empty commit, no paths\n")
    kustomization = "images:\n- name: registry.example.com/checkout\n  newTag: {tag}\n# {note}\n"
    for tag, note in (("1.0.0", "first"), ("1.1.0", "bump"), ("1.1.0", "comment only")):
        _commit(
            work,
            {"environments/dev/checkout/kustomization.yaml": kustomization.format(tag=tag, note=note)},
            note,
        )
    _git(work, "checkout", "-q", "-b", "promote/orders-1.2")
    _commit(work, {"environments/prod/orders/k.yaml": "v: 2\n"}, "promote orders\n\nRollback-Id: r-7\n")
    _git(work, "checkout", "-q", "main")
    _commit(work, {"environments/dev/orders/k.yaml": "v: 3\n"}, "main moves on\n")
    _git(work, "merge", "-q", "--no-ff", "-m", "Merge branch 'promote/orders-1.2'", "promote/orders-1.2")
    _git(work, "mv", "environments/dev/orders/k.yaml", "environments/dev/orders/renamed.yaml")
    _commit(work, {}, "rename\n")
    _git(work, "push", "-q", "origin", "main")
    # An environment branch with commits of its own, on top of main.
    _git(work, "checkout", "-q", "-b", "prod-branch")
    _commit(work, {"environments/prod/checkout/k.yaml": "p: 1\n"}, "prod only\n")
    _commit(work, {"environments/prod/checkout/k.yaml": "p: 2\n"}, "prod again\n")
    _git(work, "push", "-q", "origin", "prod-branch")
    return bare


def _repository(name: str, origin: Path) -> GitRepository:
    return cast(GitRepository, GitRepositoryFactory(name=name, url=f"file://{origin}", allow_http=False))


def _rows(repo: GitRepository) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    commits = list(
        Commit.objects.filter(repository=repo)
        .order_by("seq")
        .values_list(
            "sha", "seq", "parents", "author_name", "author_email", "authored_at", "committer_name",
            "committed_at", "message", "is_merge", "portal_ref",
        )
    )  # fmt: skip
    touches = list(
        CommitTouch.objects.filter(commit__repository=repo)
        .order_by("id")
        .values_list("commit__sha", "application__name", "environment__name", "seq", "paths", "carried")
    )
    return commits, touches


@pytest.fixture
def environments(db: None) -> None:
    EnvironmentFactory(name="dev", order=10)
    EnvironmentFactory(name="stage", order=20)
    EnvironmentFactory(name="prod", order=30, branch="prod-branch")


def _incremental_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: Any) -> Any:
        raise IntegrityError("as if another ingest had stored commits")

    monkeypatch.setattr(ingest, "_first_ingest", refuse)


@pytest.mark.django_db
def test_first_ingest_stores_the_rows_the_incremental_path_stores(
    origin: Path, environments: None, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    monkeypatch.setattr(ingest, "INGEST_BATCH", 3)  # several batches, apps discovered in later ones
    calls: list[int] = []
    real = ingest._first_ingest

    def counted(**kwargs: Any) -> Any:
        calls.append(1)
        return real(**kwargs)

    monkeypatch.setattr(ingest, "_first_ingest", counted)
    fast = _repository("fast", origin)

    first = repository_ingest(repository_id=fast.pk)

    assert first.ok and calls == [1]
    _incremental_only(monkeypatch)
    slow = _repository("slow", origin)
    assert repository_ingest(repository_id=slow.pk).ok
    fast_rows, slow_rows = _rows(fast), _rows(slow)
    assert fast_rows == slow_rows
    commits, touches = fast_rows
    assert (first.commits, first.touches) == (len(commits), len(touches)) == (20, 18)
    by_message = {c[8]: c for c in commits}
    weird = by_message["weird paths\n\nPromotion-Id: 42"]
    assert weird[3] == ("Ann\tTab \\ " + "x" * 250)[:200] and weird[10] == "Promotion-Id: 42"
    assert by_message["bump 0\n\nbody\ttab\\slash\r"][6] == "CI\\bot"
    merge = by_message["Merge branch 'promote/orders-1.2'"]
    assert merge[9] is True and len(merge[2]) == 2 and merge[10] == "promote/orders-1.2"
    assert sorted(p for t in touches if t[1] == 'pay"ments' for p in t[4]) == [
        'environments/dev/pay"ments/quote.yaml'
    ]
    payments = next(t for t in touches if t[1] == "payments")[4]
    assert sorted(payments) == sorted(
        [
            "environments/dev/payments/back\\slash.yaml",
            "environments/dev/payments/tab\there.yaml",
            "environments/dev/payments/ünï.yaml",
        ]
    )
    assert len(next(t for t in touches if t[1] == "orders" and t[2] == "stage")[4]) == 50
    assert [t[2] for t in touches if t[0] == commits[-1][0]] == ["prod"]  # the prod branch's head
    carried = [t[5] for t in touches if t[4] == ["environments/dev/checkout/kustomization.yaml"]]
    assert carried == [True, True, False]  # new file, new tag, a comment: what a promotion copies

    # Nothing new: the next ingest stores nothing, and new commits go the incremental way.
    again = repository_ingest(repository_id=fast.pk)
    assert again.ok and again.commits == 0 and _rows(fast) == fast_rows


@pytest.mark.django_db
def test_a_first_ingest_failing_midway_stores_nothing_and_its_retry_stores_everything(
    origin: Path, environments: None, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    monkeypatch.setattr(ingest, "INGEST_BATCH", 3)
    real = ingest._format_batch
    seen: list[int] = []

    def fail_third(*args: Any, **kwargs: Any) -> Any:
        seen.append(1)
        if len(seen) == 3:
            raise ValueError("worker killed")  # after two batches were COPied
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "_format_batch", fail_third)
    repo = _repository("fast", origin)

    failed = repository_ingest(repository_id=repo.pk)

    assert failed.error == "worker killed"
    assert not Commit.objects.filter(repository=repo).exists()
    monkeypatch.setattr(ingest, "_format_batch", real)
    assert repository_ingest(repository_id=repo.pk).ok
    _incremental_only(monkeypatch)
    slow = _repository("slow", origin)
    assert repository_ingest(repository_id=slow.pk).ok
    assert _rows(repo) == _rows(slow)


@pytest.mark.django_db(transaction=True)
def test_commits_stored_by_another_ingest_meanwhile_send_the_first_ingest_the_incremental_way(
    origin: Path, environments: None, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    monkeypatch.setattr(ingest, "INGEST_BATCH", 3)
    repo = _repository("fast", origin)
    head = _git(origin, "rev-parse", "refs/heads/main").strip()
    real = ingest._apps_named

    def another_worker_stores_the_head(*args: Any, **kwargs: Any) -> Any:
        # Another worker (its own connection, committed) stores main's head while this one copies.
        def store() -> None:
            Commit.objects.create(
                repository=repo, sha=head, seq=10**6, author_name="", author_email="",
                authored_at="2024-01-01T00:00:00Z", committer_name="", committed_at="2024-01-01T00:00:00Z",
                message="stored by the other worker",
            )  # fmt: skip
            connection.close()

        if not Commit.objects.filter(sha=head).exists():
            thread = threading.Thread(target=store)
            thread.start()
            thread.join()
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "_apps_named", another_worker_stores_the_head)

    result = repository_ingest(repository_id=repo.pk)

    assert result.ok
    stored = dict(Commit.objects.filter(repository=repo).values_list("sha", "message"))
    assert len(stored) == 20 and stored[head] == "stored by the other worker"
    assert Environment.objects.count() == 3
    assert GitRepository.objects.get(pk=repo.pk).ingested_heads["main"] == head


def _write(work: Path, files: dict[str, bytes | None]) -> None:
    for path, data in files.items():
        target = work / path
        if data is None:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@pytest.fixture
def carried_origin(tmp_path: Path) -> Path:
    """Changes to carried files where equal or different blob ids alone would decide wrongly."""
    bare, work = tmp_path / "carried.git", tmp_path / "cwork"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    _git(tmp_path, "clone", "-q", str(bare), str(work))
    _git(work, "checkout", "-q", "-b", "main")
    kust = "environments/dev/checkout/kustomization.yaml"
    image = "images:\n- name: registry.example.com/checkout\n  newTag: {}\n"
    weird = "environments/dev/ünï\ttab/kustomization.yaml"
    steps: list[dict[str, bytes | None]] = [
        {kust: image.format("1.0").encode(), weird: image.format("1").encode()},
        {kust: (image.format("1.0") + "# a comment\n").encode()},  # other blob, same images
        {kust: b"images: [unclosed\n"},  # unreadable: its text is the value
        {kust: b"images: [unclosed\n\n"},  # unreadable, other text
        {kust: b"images: [unclosed\n\n"},  # (no change: an empty commit)
        {kust: None},  # deleted
        {kust: image.format("2.0").encode(), weird: image.format("2").encode()},  # re-added
        # helm-values: a value carried, then one that is not
        {"environments/dev/payments/values.yaml": b"image:\n  tag: '1'\nlog: info\n"},
        {"environments/dev/payments/values.yaml": b"image:\n  tag: '1'\nlog: debug\n"},
        {"environments/dev/payments/values.yaml": b"image:\n  tag: '2'\nlog: debug\n"},
        {"environments/dev/payments/values.yaml": b"image: [broken\n"},
        # copy-paths over two files: one changed, the other not; bytes that decode alike
        {"environments/dev/orders/a.yaml": b"a\n", "environments/dev/orders/b.yaml": b"b \xff\n"},
        {"environments/dev/orders/b.yaml": b"b \xfe\n"},  # other blob, the same text decoded
        {"environments/dev/orders/a.yaml": b"a2\n"},
        {"environments/dev/orders/notes.md": b"not carried\n"},
        # Only the images block changes (the shortcut of `inventory.carried.images_value_after`).
        {kust: image.format("2.1").encode()},
        {kust: image.format('"2.1"').encode()},  # other blob, same value
        {kust: image.format("2.2").encode() + b"resources:\n- r\n"},  # and more than the block
    ]
    for i, files in enumerate(steps):
        _write(work, files)
        _commit(work, {}, f"step {i}\n")
    # The same blob as a file, then as a symlink (read as missing); a mode change only.
    _write(work, {kust: b"target"})
    _commit(work, {}, "plain file\n")
    (work / kust).unlink()
    (work / kust).symlink_to("target")
    _commit(work, {}, "the same blob as a symlink\n")
    (work / kust).unlink()
    _write(work, {kust: b"target"})
    _commit(work, {}, "a file again\n")
    (work / kust).chmod(0o755)
    _commit(work, {}, "mode only\n")
    # A merge: compared with its first parent.
    _git(work, "checkout", "-q", "-b", "feature")
    _write(work, {kust: image.format("3.0").encode()})
    _commit(work, {}, "feature bump\n")
    _git(work, "checkout", "-q", "main")
    _commit(work, {"environments/dev/orders/other.yaml": "x\n"}, "main moves on\n")
    _git(work, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    _git(work, "push", "-q", "origin", "main")
    return bare


@pytest.mark.django_db
def test_first_ingest_decides_carried_as_carried_value_does(
    carried_origin: Path, environments: None, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    monkeypatch.setattr(ingest, "INGEST_BATCH", 4)  # values cached across batches
    ApplicationFactory(name="payments", strategy="helm-values", strategy_options={"paths": ["image.tag"]})
    ApplicationFactory(name="orders", strategy="copy-paths", strategy_options={"paths": ["a.yaml", "b.yaml"]})
    fast = _repository("fast", carried_origin)
    assert repository_ingest(repository_id=fast.pk).ok
    _incremental_only(monkeypatch)  # files_at and carried_value at both revisions, per touch
    slow = _repository("slow", carried_origin)
    assert repository_ingest(repository_id=slow.pk).ok

    fast_rows, slow_rows = _rows(fast), _rows(slow)
    assert fast_rows == slow_rows
    message = {c[0]: c[8] for c in fast_rows[0]}
    carried = {(message[t[0]], t[1]): t[5] for t in fast_rows[1]}
    assert carried == {
        ("step 0", "checkout"): True,
        ("step 0", "ünï\ttab"): True,
        ("step 1", "checkout"): False,
        ("step 2", "checkout"): True,
        ("step 3", "checkout"): True,
        ("step 5", "checkout"): True,
        ("step 6", "checkout"): True,
        ("step 6", "ünï\ttab"): False,  # a path with a tab is unsafe: read as missing on both sides
        ("step 7", "payments"): True,
        ("step 8", "payments"): False,
        ("step 9", "payments"): True,
        ("step 10", "payments"): True,
        ("step 11", "orders"): True,
        ("step 12", "orders"): False,
        ("step 13", "orders"): True,
        ("step 14", "orders"): False,
        ("step 15", "checkout"): True,
        ("step 16", "checkout"): False,
        ("step 17", "checkout"): True,
        ("plain file", "checkout"): True,
        ("the same blob as a symlink", "checkout"): True,
        ("a file again", "checkout"): True,
        ("mode only", "checkout"): False,
        ("main moves on", "orders"): False,
        ("feature bump", "checkout"): True,
        ("merge feature", "checkout"): True,
    }


@pytest.mark.django_db
def test_the_raw_log_gives_the_commits_and_paths_of_the_name_status_log(
    origin: Path, carried_origin: Path, settings: Any, tmp_path: Path
) -> None:
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    for name, bare in (("o", origin), ("c", carried_origin)):
        mirror = mirror_for(_repository(name, bare))
        mirror.ensure()
        for branch in ("main", "prod-branch"):
            if mirror.branch_head(branch) is None:
                continue
            ref = f"refs/heads/{branch}"
            raw = list(mirror.iter_log_entries(ref=ref))
            named = list(parse_log_entries(mirror._log(ref, None, (), True)))
            assert [e[:10] for e in raw] == [tuple(e[:10]) for e in named] and raw
            for entry in raw:
                assert entry.raw is not None and set(entry.raw) == set(entry.paths)


# Kustomizations and values files a generated history cycles through: the usual, and what the
# first ingest's shortcuts must leave to the full reader (anchors, comments, flow style, numbers
# written like 1.10, digests, quotes, nulls, duplicate keys, unreadable texts, no final newline).
_HEADS = [
    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: team-a\n"
    "resources:\n  - ../../../apps/{app}/base\n",
    "resources:\n- ../../../apps/{app}/base\nnamespace: team-b\n",
    "# managed by CI\nresources: [../../../apps/{app}/base]\n",
    'x-common: &tag "7.7"\nresources:\n  - ../../../apps/{app}/base\n',
    "resources: not-a-list\n",
    "",
]
_PINS = [
    '"1.0"',
    "1.10",
    "1.1",
    "'1.0'",
    "v3",
    "'2.0'",
    "~",
    "null",
    "*tag",
    "1.0 # pinned",
    '" 4.0 "',
    "010",
]
_BLOCKS = [
    "images:\n  - name: registry.example.com/{app}\n    newTag: {tag}\n",
    "images:\n- name: registry.example.com/{app}\n  newTag: {tag}\n",
    "images:\n  - name: registry.example.com/{app}\n    digest: sha256:{digest}\n",
    "images:\n  - name: registry.example.com/{app}\n    newName: mirror.example.com/{app}\n    newTag: {tag}\n"
    "  - name: sidecar\n    newTag: {tag}\n",
    "images:\n  # the app\n  - name: registry.example.com/{app}\n\n    newTag: {tag}\n",
    "images: [{{name: registry.example.com/{app}, newTag: {tag}}}]\n",
    "images:\n  - {{name: registry.example.com/{app}, newTag: {tag}}}\n",
    "images:\n  - &img\n    name: registry.example.com/{app}\n    newTag: {tag}\n",
    "images:\n  - name: registry.example.com/{app}\n    newTag: {tag}\n    newTag: {tag}\n",
    "images:\n# col 0\n  - name: registry.example.com/{app}\n    newTag: {tag}\n",
    "images:\n  - name: registry.example.com/{app}\n    newTag: {tag}\n# col 0\n  - name: sidecar\n",
    "images:\n  - name: registry.example.com/{app}\n    newTag: |\n      {tag}\n",
    "images:\n  - name:\n    newTag: {tag}\n",
    "",
]
_TAILS = [
    "configMapGenerator:\n  - name: cfg\n    literals:\n      - LOG_LEVEL={level}\n",
    "patches:\n  - patch: |-\n      - op: replace\n        value: {level}\n",
    "images:\n  - name: late\n",
    "---\nkind: Other\n",
    "labels:\n  - pairs:\n      env: {level}\n",
    "",
]


def _kustomization(rng: Any, app: str) -> bytes:
    if rng.random() < 0.03:
        return rng.choice(
            [b"images: [unclosed\n", b"\tbad: tab\n", b"- a list\n", b"images:\n  - name: \xff\n"]
        )
    usual = rng.random() < 0.6  # the first heads, blocks and tails: the texts the shortcuts take
    tag = rng.choice(_PINS)
    text = (
        rng.choice(_HEADS[:2] if usual else _HEADS).format(app=app)
        + rng.choice(_BLOCKS[:4] * 2 + _BLOCKS[10:12] if usual else _BLOCKS).format(
            app=app, tag=tag, digest=str(rng.randrange(4)) * 8
        )
        + rng.choice(_TAILS[:2] if usual else _TAILS).format(level=rng.choice(["info", "debug"]))
    )
    return text.encode()[: -1 if rng.random() < 0.05 else None]


def _history(path: Path, commits: int, seed: int) -> Path:
    """A bare repository of `commits` commits written with `git fast-import`: each changes a few
    overlay files (rewritten, deleted, or only bumped in the images block, the usual case)."""
    import random

    rng = random.Random(seed)
    _git(path.parent, "init", "-q", "--bare", "-b", "main", str(path))
    texts: dict[str, bytes] = {}
    stream = bytearray()
    for i in range(commits):
        files: dict[str, bytes | None] = {}
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            env, app = rng.choice(["dev", "stage"]), rng.choice(["checkout", "cart", "payments", "orders"])
            base = f"environments/{env}/{app}/"
            if app == "payments":
                tag = rng.choice(["'1'", "1.10", "1.1", "[broken", "~"])
                files[base + "values.yaml"] = f"image:\n  tag: {tag}\nlog: {rng.choice('ab')}\n".encode()
            elif app == "orders":
                files[base + rng.choice(["a.yaml", "b.yaml", "notes.md"])] = rng.choice(
                    [b"a\n", b"b \xff\n", b"b \xfe\n"]
                )
            elif rng.random() < 0.04:
                files[base + "kustomization.yaml"] = None
            elif rng.random() < 0.05:
                files[base + "other.yaml"] = f"n: {i}\n".encode()
            else:
                path_ = base + "kustomization.yaml"
                old = texts.get(path_)
                if old is not None and rng.random() < 0.75:
                    # A CI bump: only the tag in the images block changes.
                    text = old.decode("utf-8", "replace")
                    for pin in _PINS:
                        if f"newTag: {pin}\n" in text:
                            text = text.replace(
                                f"newTag: {pin}\n", f"newTag: {rng.choice(_PINS[:5] * 3 + _PINS)}\n", 1
                            )
                            break
                    files[path_] = text.encode()
                else:
                    files[path_] = _kustomization(rng, app)
        message = f"change {i}\n".encode()
        stream += b"commit refs/heads/main\n"
        stream += f"committer Dev <d@x> {1_700_000_000 + i * 60} +0000\n".encode()
        stream += f"data {len(message)}\n".encode() + message
        for file, data in files.items():
            if data is None:
                if file in texts:
                    stream += f"D {file}\n".encode()
                    del texts[file]
                continue
            texts[file] = data
            stream += f"M 100644 inline {file}\n".encode() + f"data {len(data)}\n".encode() + data + b"\n"
    subprocess.run(["git", "--git-dir", str(path), "fast-import", "--quiet"], input=bytes(stream), check=True)
    return path


@pytest.mark.django_db
def test_first_ingest_of_a_generated_history_decides_carried_as_the_full_reader(
    environments: None, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inventory.carried as carried

    settings.MIRRORS_DIR = tmp_path / "mirrors"
    bare = _history(tmp_path / "generated.git", 1500, seed=5)
    ApplicationFactory(
        name="payments", strategy="helm-values", strategy_options={"paths": ["image.tag", "log"]}
    )
    ApplicationFactory(name="orders", strategy="copy-paths", strategy_options={"paths": ["a.yaml", "b.yaml"]})
    # Small batches and caches: blob reads overlap across batches, caches are cleared midway.
    monkeypatch.setattr(ingest, "INGEST_BATCH", 37)
    monkeypatch.setattr(ingest, "_CARRIED_CACHE", 400)
    taken = {"frame": 0, "sections": 0}
    # Counted in this process: the values process is not started here.
    monkeypatch.setattr(ingest, "_CARRIED_PROCESS_AFTER", -1)
    in_frame, by_sections = carried.images_value_in_frame, carried.simple_yaml_by_sections

    def count_frame(text: str, frames: Any, blocks: Any = None) -> Any:
        value = in_frame(text, frames, blocks)
        taken["frame"] += value is not None
        return value

    def count_sections(text: str, sections: Any) -> Any:
        value = by_sections(text, sections)
        taken["sections"] += 1
        return value

    monkeypatch.setattr(carried, "images_value_in_frame", count_frame)
    monkeypatch.setattr(carried, "simple_yaml_by_sections", count_sections)
    fast = _repository("fast", bare)
    assert repository_ingest(repository_id=fast.pk).ok
    _incremental_only(monkeypatch)  # per touch: files_at and carried_value at the commit and its parent
    slow = _repository("slow", bare)
    assert repository_ingest(repository_id=slow.pk).ok

    fast_rows, slow_rows = _rows(fast), _rows(slow)
    assert len(fast_rows[1]) > 1500
    assert [t[5] for t in fast_rows[1]] == [t[5] for t in slow_rows[1]]
    assert fast_rows == slow_rows
    carried_values = [t[5] for t in fast_rows[1]]
    print(taken, carried_values.count(True), carried_values.count(False))
    assert carried_values.count(True) > 300 and carried_values.count(False) > 200
    assert taken["frame"] > 100 and taken["sections"] > 50  # the shortcuts were taken


def _count_process_answers(monkeypatch: pytest.MonkeyPatch, kill_after: int | None = None) -> dict[str, int]:
    """Count the batches the values process answered; with `kill_after`, kill it after that many."""
    from inventory.carried_worker import ImagesProcess

    counted = {"answers": 0, "started": 0}
    answer, init = ImagesProcess.answer, ImagesProcess.__init__

    def counting_init(self: ImagesProcess, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        counted["started"] += 1

    def counting_answer(self: ImagesProcess) -> bytes | None:
        if kill_after is not None and counted["answers"] == kill_after:
            self._proc.kill()  # a crash (OOM killer, …) between two batches
            self._proc.wait()
        value = answer(self)
        counted["answers"] += 1
        return value

    monkeypatch.setattr(ImagesProcess, "__init__", counting_init)
    monkeypatch.setattr(ImagesProcess, "answer", counting_answer)
    return counted


@pytest.mark.django_db
@pytest.mark.parametrize("kill_after", [None, 5])
def test_kustomize_images_values_taken_in_their_own_process_are_the_full_readers(
    environments: None, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_after: int | None
) -> None:
    """A long first ingest values kustomize images in a process of its own (inventory.carried_worker):
    the same rows as the incremental path; a process killed midway leaves the rest to the ingest."""
    settings.MIRRORS_DIR = tmp_path / "mirrors"
    bare = _history(tmp_path / "generated.git", 600, seed=11)
    monkeypatch.setattr(ingest, "INGEST_BATCH", 29)
    monkeypatch.setattr(ingest, "_CARRIED_PROCESS_AFTER", 1)
    counted = _count_process_answers(monkeypatch, kill_after)
    fast = _repository("fast", bare)
    assert repository_ingest(repository_id=fast.pk).ok
    _incremental_only(monkeypatch)
    slow = _repository("slow", bare)
    assert repository_ingest(repository_id=slow.pk).ok

    fast_rows, slow_rows = _rows(fast), _rows(slow)
    assert fast_rows == slow_rows
    carried_values = [t[5] for t in fast_rows[1]]
    assert carried_values.count(True) > 100 and carried_values.count(False) > 50
    assert counted["started"] == 1
    if kill_after is None:
        assert counted["answers"] >= 19  # batches 2… of 21 (600 commits / 29), each with images
    else:
        assert counted["answers"] == kill_after  # then it is gone, and the ingest values the rest


def test_the_values_process_answers_none_when_git_cannot_read(tmp_path: Path) -> None:
    """A blob read that fails (here: no repository) is answered None: the ingest counts nothing."""
    from integrations.gitrepo import GitMirror
    from inventory.carried_worker import ImagesProcess

    mirror = GitMirror(tmp_path / "missing.git", "https://example.invalid/x.git")
    process = ImagesProcess(mirror.blob_reader(), 1000, cwd=str(Path(__file__).resolve().parents[2]))
    try:
        process.submit([("a" * 40, "b" * 40)])
        assert process.answer() is None
        process.submit([(None, None)])
        assert process.answer() == b"\x00"  # no file on either side: nothing read, nothing changed
    finally:
        process.close()
