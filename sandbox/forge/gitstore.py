"""Run git plumbing against one bare repository: the emulator's only source of truth for Git data."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ZERO_SHA = "0" * 40
# Git knows this object without it being stored; it lets a root commit diff against "nothing".
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_FIELD = "\x1f"
_RECORD = "\x1e"
_LOG_FORMAT = _RECORD + _FIELD.join(["%H", "%T", "%P", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%B"])
_RAW_STATUS = {"A": "added", "D": "removed", "M": "modified", "R": "renamed", "C": "copied", "T": "changed"}


class GitCommandError(RuntimeError):
    """A git subprocess failed in a way the caller did not expect."""

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"git {' '.join(args)} failed ({returncode}): {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class Identity:
    """Who authored or committed something, with an ISO date (None = now)."""

    name: str
    email: str
    date: str | None = None


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author: Identity
    committer: Identity
    message: str


@dataclass(frozen=True)
class FileChange:
    filename: str
    status: str  # GitHub wording: added, removed, modified, renamed, copied, changed
    sha: str | None
    additions: int
    deletions: int
    patch: str | None
    previous_filename: str | None = None


@dataclass(frozen=True)
class TreeEntry:
    mode: str
    type: str
    sha: str
    size: int | None
    path: str


def utc_iso(value: str | None) -> str | None:
    """Normalise a git ISO date (any offset) to GitHub's `YYYY-MM-DDTHH:MM:SSZ`."""
    if not value:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BareRepo:
    """Thin typed wrapper over `git --git-dir=<bare repo>` commands."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return (self.path / "HEAD").is_file() and (self.path / "objects").is_dir()

    # --- process plumbing -------------------------------------------------------------------
    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
        ok_codes: tuple[int, ...] = (0,),
    ) -> subprocess.CompletedProcess[bytes]:
        full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
        proc = subprocess.run(
            ["git", f"--git-dir={self.path}", *args],
            input=stdin,
            capture_output=True,
            env=full_env,
            check=False,
        )
        if proc.returncode not in ok_codes:
            raise GitCommandError(list(args), proc.returncode, proc.stderr.decode(errors="replace"))
        return proc

    def text(self, *args: str, **kwargs: object) -> str:
        return self.run(*args, **kwargs).stdout.decode(errors="replace")  # type: ignore[arg-type]

    # --- refs -------------------------------------------------------------------------------
    def resolve(self, rev: str) -> str | None:
        """Return the commit sha `rev` names, or None. Refuses option-looking input."""
        if not rev or rev.startswith("-"):
            return None
        return self.ref_sha(f"{rev}^{{commit}}")

    def branch_sha(self, branch: str) -> str | None:
        return self.ref_sha(f"refs/heads/{branch}")

    def ref_sha(self, ref: str) -> str | None:
        proc = self.run("rev-parse", "--verify", "--quiet", "--end-of-options", ref, ok_codes=(0, 1, 128))
        if proc.returncode != 0:
            return None
        return proc.stdout.decode().strip() or None

    def refs(self, prefix: str = "refs/") -> dict[str, str]:
        out = self.text("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        pairs = (line.split(" ", 1) for line in out.splitlines() if line)
        return {ref: sha for ref, sha in pairs}

    def branches(self) -> dict[str, str]:
        return {ref.removeprefix("refs/heads/"): sha for ref, sha in self.refs("refs/heads/").items()}

    def default_branch(self) -> str:
        head = self.text("symbolic-ref", "--quiet", "HEAD", ok_codes=(0, 1)).strip()
        branches = self.branches()
        name = head.removeprefix("refs/heads/")
        if name in branches or not branches:
            return name or "main"
        # A fresh `git init --bare` points HEAD at master even when only main was pushed.
        return "main" if "main" in branches else sorted(branches)[0]

    def update_ref(self, ref: str, new: str | None, old: str | None, message: str = "sandbox-forge") -> bool:
        """Compare-and-swap a ref; None means "absent". Returns False when `old` no longer holds."""
        expected = old or ZERO_SHA
        if new is None:
            proc = self.run("update-ref", "-m", message, "-d", ref, expected, ok_codes=(0, 1, 128))
        else:
            proc = self.run("update-ref", "-m", message, ref, new, expected, ok_codes=(0, 1, 128))
        return proc.returncode == 0

    # --- history ----------------------------------------------------------------------------
    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return self.run("merge-base", "--is-ancestor", ancestor, descendant, ok_codes=(0, 1)).returncode == 0

    def merge_base(self, a: str, b: str) -> str | None:
        return self.text("merge-base", a, b, ok_codes=(0, 1)).strip() or None

    def count(self, revs: list[str], paths: tuple[str, ...] = ()) -> int:
        return int(self.text("rev-list", "--count", *revs, "--", *paths).strip() or 0)

    def log(
        self,
        revs: list[str],
        *,
        paths: tuple[str, ...] = (),
        skip: int = 0,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[CommitInfo]:
        args = ["log", f"--format={_LOG_FORMAT}", f"--skip={skip}"]
        if limit is not None:
            args.append(f"--max-count={limit}")
        if reverse:
            args.append("--reverse")
        out = self.text(*args, *revs, "--", *paths)
        return [_parse_commit(rec) for rec in out.split(_RECORD) if rec.strip()]

    def commit(self, sha: str) -> CommitInfo | None:
        resolved = self.resolve(sha)
        if resolved is None:
            return None
        found = self.log([resolved], limit=1)
        return found[0] if found else None

    # --- diffs ------------------------------------------------------------------------------
    def diff(self, old: str | None, new: str) -> list[FileChange]:
        """Files changed from `old` to `new` (commits or trees), with GitHub-style hunk-only patches."""
        base = old or EMPTY_TREE
        raw = self.text("diff-tree", "-r", "-M", "--raw", "-z", "--no-abbrev", base, new).split("\0")
        numstat = self.text("diff-tree", "-r", "-M", "--numstat", "-z", base, new).split("\0")
        patches = _split_patch(self.text("diff-tree", "-r", "-M", "-p", "--no-color", base, new))
        entries = _parse_raw(raw)
        counts = _parse_numstat(numstat)
        changes = []
        for index, (status, old_sha, new_sha, path, previous) in enumerate(entries):
            adds, dels = counts[index] if index < len(counts) else (0, 0)
            changes.append(
                FileChange(
                    filename=path,
                    status=status,
                    sha=(old_sha if status == "removed" else new_sha),
                    additions=adds,
                    deletions=dels,
                    patch=patches[index] if index < len(patches) else None,
                    previous_filename=previous,
                )
            )
        return changes

    # --- objects ----------------------------------------------------------------------------
    def object_type(self, spec: str) -> str | None:
        proc = self.run("cat-file", "-t", spec, ok_codes=(0, 1, 128))
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def object_sha(self, spec: str) -> str | None:
        proc = self.run("rev-parse", "--verify", "--quiet", spec, ok_codes=(0, 1, 128))
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def read_blob(self, sha: str) -> bytes:
        return self.run("cat-file", "blob", sha).stdout

    def ls_tree(self, treeish: str, *, recursive: bool = False) -> list[TreeEntry]:
        flags = ["-r", "-t"] if recursive else []
        out = self.text("ls-tree", "-z", "--long", *flags, treeish)
        entries = []
        for item in out.split("\0"):
            if not item:
                continue
            meta, path = item.split("\t", 1)
            mode, kind, sha, size = meta.split()
            entries.append(TreeEntry(mode, kind, sha, None if size == "-" else int(size), path))
        return entries

    def write_blob(self, data: bytes) -> str:
        return self.text("hash-object", "-w", "--stdin", stdin=data).strip()

    def tree_with_changes(self, base_tree: str | None, changes: dict[str, tuple[str, str] | None]) -> str:
        """Write a tree = `base_tree` + changes ({path: (mode, blob sha)} or {path: None} to delete)."""
        with tempfile.TemporaryDirectory(prefix="forge-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if base_tree:
                self.run("read-tree", base_tree, env=env)
            else:
                self.run("read-tree", "--empty", env=env)
            lines = []
            for path, entry in changes.items():
                if entry is None:
                    lines.append(f"0 {ZERO_SHA}\t{path}\n")
                else:
                    lines.append(f"{entry[0]} {entry[1]}\t{path}\n")
            self.run("update-index", "--index-info", stdin="".join(lines).encode(), env=env)
            return self.text("write-tree", env=env).strip()

    def merge_tree(self, base: str, head: str) -> tuple[str | None, list[str]]:
        """Three-way merge without a worktree; returns (tree, []) or (None, conflicted paths)."""
        proc = self.run(
            "merge-tree", "--write-tree", "--name-only", "--no-messages", base, head, ok_codes=(0, 1)
        )
        lines = proc.stdout.decode().splitlines()
        if proc.returncode == 0:
            return lines[0].strip(), []
        return None, sorted({line for line in lines[1:] if line})

    def commit_tree(
        self, tree: str, parents: list[str], message: str, author: Identity, committer: Identity
    ) -> str:
        env = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": committer.name,
            "GIT_COMMITTER_EMAIL": committer.email,
        }
        if author.date:
            env["GIT_AUTHOR_DATE"] = author.date
        if committer.date:
            env["GIT_COMMITTER_DATE"] = committer.date
        parent_args = [arg for parent in parents for arg in ("-p", parent)]
        return self.text("commit-tree", tree, *parent_args, stdin=message.encode(), env=env).strip()


def _parse_commit(record: str) -> CommitInfo:
    parts = record.split(_FIELD)
    sha, tree, parents, an, ae, ad, cn, ce, cd = (p.strip() for p in parts[:9])
    message = _FIELD.join(parts[9:]).rstrip("\n")
    return CommitInfo(
        sha=sha,
        tree=tree,
        parents=tuple(parents.split()),
        author=Identity(an, ae, utc_iso(ad)),
        committer=Identity(cn, ce, utc_iso(cd)),
        message=message,
    )


def _parse_raw(tokens: list[str]) -> list[tuple[str, str, str, str, str | None]]:
    """Parse `diff-tree --raw -z` into (status, old sha, new sha, path, previous path)."""
    entries: list[tuple[str, str, str, str, str | None]] = []
    i = 0
    while i < len(tokens):
        meta = tokens[i]
        if not meta.startswith(":"):
            i += 1
            continue
        _, _, old_sha, new_sha, letter = meta[1:].split(" ")
        kind = _RAW_STATUS.get(letter[0], "changed")
        if letter[0] in "RC":
            entries.append((kind, old_sha, new_sha, tokens[i + 2], tokens[i + 1]))
            i += 3
        else:
            entries.append((kind, old_sha, new_sha, tokens[i + 1], None))
            i += 2
    return entries


def _parse_numstat(tokens: list[str]) -> list[tuple[int, int]]:
    """Parse `diff-tree --numstat -z`; renames put the two paths in their own NUL fields."""
    counts: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if "\t" not in token:
            i += 1
            continue
        adds, dels, path = token.split("\t", 2)
        counts.append((int(adds) if adds.isdigit() else 0, int(dels) if dels.isdigit() else 0))
        i += 3 if path == "" else 1
    return counts


def _split_patch(text: str) -> list[str | None]:
    """Split a multi-file patch per file and keep only the hunks, as GitHub's `patch` field does."""
    chunks: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("diff --git "):
            chunks.append([])
        elif chunks:
            chunks[-1].append(line)
    result: list[str | None] = []
    for lines in chunks:
        start = next((n for n, line in enumerate(lines) if line.startswith("@@")), None)
        result.append("\n".join(lines[start:]) if start is not None else None)
    return result
