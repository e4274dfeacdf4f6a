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
