"""Read-only git plumbing for the emulator (what Argo CD's repo-server does for us): resolve the branch
head, list directory tree hashes, read blobs in batches, and commit metadata."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.repogen import cat_files


class GitReadError(RuntimeError):
    pass


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author_name: str
    author_email: str
    author_time: int
    message: str
    tags: tuple[str, ...]

    @property
    def author(self) -> str:
        return f"{self.author_name} <{self.author_email}>"


@dataclass(frozen=True)
class Touch:
    sha: str
    time: int


class GitReader:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def _git(self, *args: str, input_: bytes | None = None) -> bytes:
        proc = subprocess.run(["git", "-C", self.path, *args], input=input_, capture_output=True)
        if proc.returncode != 0:
            raise GitReadError(proc.stderr.decode(errors="replace").strip() or f"git {args[0]} failed")
        return proc.stdout

    def resolve(self, rev: str) -> str | None:
        """Full commit SHA for a branch/tag/(short) SHA, or None."""
        if not rev or rev.startswith("-"):
            return None
        try:
            out = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
        except GitReadError:
            return None
        return out.decode().strip() or None

    def dir_trees(self, rev: str) -> dict[str, str]:
        """``{directory path: tree sha}`` for every directory at ``rev``."""
        out = self._git("ls-tree", "-r", "-d", rev).decode()
        trees: dict[str, str] = {}
        for line in out.splitlines():
            meta, _, path = line.partition("\t")
            trees[path] = meta.split()[2]
        return trees

    def read(self, specs: Sequence[str]) -> dict[str, str]:
        return cat_files(self.path, specs)

    def commit(self, sha: str) -> CommitInfo:
        fmt = "%H%x00%an%x00%ae%x00%at%x00%B"
        out = self._git("show", "-s", f"--format={fmt}", "--end-of-options", sha).decode()
        full, name, email, when, message = out.split("\x00", 4)
        tags = self._git("tag", "--points-at", full).decode().split()
        return CommitInfo(full, name, email, int(when), message.rstrip("\n"), tuple(sorted(tags)))

    def commit_time(self, sha: str) -> int:
        return int(self._git("show", "-s", "--format=%ct", sha).decode().strip())

    def path_touches(
        self, rev: str, limit: int
    ) -> tuple[dict[tuple[str, str], list[Touch]], dict[tuple[str, str], int]]:
        """Walk the first-parent history once and collect, per ``(env, app)`` (env ``*`` = the app's
        base), the newest ``limit`` commits that changed it plus the total count. One ``git log`` for all
        apps: per-path ``git log`` calls would be far too slow on big repos."""
        proc = subprocess.Popen(
            [
                "git",
                "-C",
                self.path,
                "log",
                "--first-parent",
                "-m",
                "--name-only",
                "--no-renames",
                "--format=%x00%H %ct",
                rev,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        touches: dict[tuple[str, str], list[Touch]] = defaultdict(list)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        current: Touch | None = None
        seen: set[tuple[str, str]] = set()
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("\x00"):
                sha, ts = line[1:].split()
                current, seen = Touch(sha, int(ts)), set()
                continue
            if not line or current is None:
                continue
            key = _key_for(line)
            if key is None or key in seen:
                continue
            seen.add(key)
            counts[key] += 1
            if len(touches[key]) < limit:
                touches[key].append(current)
        proc.wait()
        return dict(touches), dict(counts)


def _key_for(path: str) -> tuple[str, str] | None:
    parts = path.split("/")
    if parts[0] == "environments" and len(parts) >= 4:
        return (parts[1], parts[2])
    if parts[0] == "apps" and len(parts) >= 3:
        return ("*", parts[1])
    return None


def object_ids(reader: GitReader, specs: Sequence[str]) -> dict[str, str]:
    """``{"<rev>:<path>": object sha}`` via one ``cat-file --batch-check``; missing specs are left out."""
    if not specs:
        return {}
    out = reader._git("cat-file", "--batch-check", input_="".join(f"{s}\n" for s in specs).encode())
    result: dict[str, str] = {}
    for spec, line in zip(specs, out.decode().splitlines(), strict=False):
        if not line.endswith("missing") and not line.endswith("ambiguous"):
            result[spec] = line.split()[0]
    return result
