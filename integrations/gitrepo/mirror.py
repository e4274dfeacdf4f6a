"""GitMirror: a bare mirror for fetch, log ingest, ancestry, diffs and file reads at a revision."""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from integrations.gitrepo.command import DEFAULT_MAX_FILE_BYTES, _base_env, _decode, _Runner, _scrubber
from integrations.gitrepo.errors import GitError, InvalidRef
from integrations.gitrepo.log import (
    _LOG_FORMAT,
    CommitRecord,
    LogEntry,
    parse_log_stream,
    parse_raw_log_entries,
)
from integrations.gitrepo.paths import _MODE_TREE, _check_tree_path
from integrations.gitrepo.validate import (
    check_remote_url,
    validate_ref_name,
    validate_repo_path,
    validate_rev,
    validate_sha,
)


class GitMirror:
    """A bare mirror of a remote's branches for log ingest, ancestry, diffs and file reads."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        remote_url: str,
        *,
        token: str | None = None,
        allow_file: bool = False,
        allow_http: bool = False,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.path = Path(path)
        self.max_file_bytes = max_file_bytes
        self.remote_url = check_remote_url(remote_url, allow_file=allow_file, allow_http=allow_http)
        env = _base_env(self.remote_url, token, allow_file=allow_file, allow_http=allow_http)
        self._git = _Runner(self.path, {**env, "GIT_DIR": str(self.path)}, _scrubber(token))

    def __repr__(self) -> str:
        return f"GitMirror({str(self.path)!r}, {self.remote_url!r})"

    def ensure(self) -> bool:
        """Create the bare mirror and fetch if missing; return True when it was created."""
        created = not (self.path / "HEAD").exists()
        if created:
            self.path.mkdir(parents=True, exist_ok=True)
            self._git.run("init", "--quiet", "--bare", "--", str(self.path))
        # Checked every time: repairs a half-initialised mirror and follows a changed URL. Written only
        # when different, because concurrent writers of .git/config fail on its lock file.
        # Branches only: a `--mirror` clone of GitHub would also pull every refs/pull/* head.
        # Read in one `git config` run (the watcher fetches before storing a sync: each run counts).
        _, listing = self._git.run(
            "config",
            "--get-regexp",
            r"^(remote\.origin\.(url|fetch|tagopt)|fetch\.writecommitgraph)$",
            ok_codes=(0, 1),
        )
        current: dict[str, str] = {}
        for line in listing.splitlines():
            name, _, value = line.partition(" ")
            current[name.lower()] = value  # the last value wins, as with `git config --get`
        for key, value in (
            ("remote.origin.url", self.remote_url),
            ("remote.origin.fetch", "+refs/heads/*:refs/heads/*"),
            ("remote.origin.tagOpt", "--no-tags"),
            # A commit-graph after each fetch: `git log --topo-order` (the ingest's) then starts
            # streaming at once instead of after parsing every commit (0.5 s at 100,000 commits).
            ("fetch.writeCommitGraph", "true"),
        ):
            if current.get(key.lower(), "").strip() != value:
                self._git.run("config", key, value)
        if created:
            self.fetch()
        return created

    def fetch(self) -> None:
        """Fetch all branches from the remote, pruning deleted ones."""
        self._git.run("fetch", "--quiet", "--prune", "--no-tags", "origin")

    def remote_heads(self) -> dict[str, str]:
        """Return the remote's branch heads (branch → SHA) without fetching or writing anything."""
        _, out = self._git.run("ls-remote", "--heads", "origin")
        heads: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/"):
                heads[ref.removeprefix("refs/heads/")] = sha.strip()
        return heads

    def iter_commits(
        self,
        *,
        ref: str = "refs/heads/main",
        since_sha: str | None = None,
        known_shas: Iterable[str] = (),
        reverse: bool = True,
    ) -> Iterator[CommitRecord]:
        """Yield commits reachable from `ref` but not from `since_sha`/`known_shas`.

        One streaming `git log` process; oldest first when `reverse` (parents before children).
        """
        return parse_log_stream(self._log(ref, since_sha, known_shas, reverse))

    def iter_log_entries(self, *, ref: str, known_shas: Iterable[str] = ()) -> Iterator[LogEntry]:
        """`iter_commits` (oldest first) as light LogEntries, for bulk ingest.

        The same run with `--raw` instead of `--name-status`: each path comes with its blob ids
        before and after (`LogEntry.raw`), so the ingest compares files without reading trees.
        """
        return parse_raw_log_entries(self._log(ref, None, known_shas, True, ("--raw", "--no-abbrev")))

    def _log(
        self,
        ref: str,
        since_sha: str | None,
        known_shas: Iterable[str],
        reverse: bool,
        diff: tuple[str, ...] = ("--name-status",),
    ) -> Iterator[bytes]:
        args = ["log", "-z", *diff, "--no-renames", "--diff-merges=first-parent"]
        args += [f"--format={_LOG_FORMAT}", "--no-color", "--encoding=UTF-8", "--topo-order"]
        if reverse:
            args.append("--reverse")
        args += ["--end-of-options", validate_rev(ref)]
        excluded = [validate_sha(s) for s in ([since_sha] if since_sha else [])]
        excluded += [validate_sha(s) for s in known_shas]
        args += [f"^{s}" for s in excluded]
        args.append("--")
        return self._git.stream(*args)

    def rev_parse(self, ref: str) -> str:
        """Resolve a ref or SHA to a full commit SHA; raise InvalidRef when it does not exist."""
        rev = validate_rev(ref)
        code, out = self._git.run(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", ok_codes=(0, 1)
        )
        if code != 0 or not out.strip():
            raise InvalidRef(f"unknown revision {ref!r:.80}")
        return out.strip()

    def branch_head(self, branch: str) -> str | None:
        """Return the SHA at refs/heads/<branch>, or None."""
        try:
            return self.rev_parse(f"refs/heads/{validate_ref_name(branch)}")
        except InvalidRef:
            validate_ref_name(branch)  # re-raise a validation error; a missing branch is None
            return None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Return True if `ancestor` is reachable from `descendant`."""
        a, d = validate_rev(ancestor), validate_rev(descendant)
        code, _ = self._git.run("merge-base", "--is-ancestor", "--end-of-options", a, d, ok_codes=(0, 1))
        return code == 0

    def file_at(self, rev: str, path: str) -> bytes | None:
        """Return the file content at a revision, or None if the path does not exist there.

        Raises UnsafeRepositoryContent for a path through a symlink or submodule, or a file over
        `max_file_bytes`; a directory reads as None. Answers at a full commit SHA are kept (a
        commit's files never change): a preview reads the same overlay at a commit several times,
        and three git runs per read were most of its git time.
        """
        safe = validate_repo_path(path)
        key = (str(self.path), rev, safe)
        hit = _FILES.get(key)
        if hit is not None and len(hit[0] or b"") <= self.max_file_bytes:
            return hit[0]  # (a smaller cap than the one it was read with reads it again: refused)
        # A full SHA needs no `rev-parse` run of its own: `<sha>^{commit}` makes the tree listing
        # refuse what is not a commit, and only a failure asks whether the revision exists.
        full = _FULL_SHA.fullmatch(rev) is not None
        commit = f"{rev}^{{commit}}" if full else self.rev_parse(rev)
        try:
            mode = _check_tree_path(self._git, commit, safe, max_bytes=self.max_file_bytes)
        except GitError:
            if full:
                self.rev_parse(rev)  # InvalidRef for an unknown revision, as for any other rev
            raise
        if mode is None or mode == _MODE_TREE:
            data = None
        else:
            code, out = self._git.run_bytes("cat-file", "blob", f"{commit}:{safe}", ok_codes=(0, 128))
            data = out if code == 0 else None
        if full:
            _FILES.put(key, data)
        return data

    def files_at(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, bytes] | None]:
        """Read many `(revision, file path)` pairs with two `git cat-file --batch` runs.

        Returns each pair's `(blob id, content)`, or None where `file_at` would return None or refuse:
        an invalid path, a missing path or revision, a directory, a symlink or submodule (a path through one does not
        resolve without `--follow-symlinks`; the file itself is checked by its mode in its parent
        tree), or a file over `max_file_bytes`. Blobs shared by several revisions are read once.
        """
        asked = set(wanted)
        found: dict[tuple[str, str], tuple[str, bytes] | None] = dict.fromkeys(asked)
        safe: dict[tuple[str, str], tuple[str, str]] = {}
        # Each distinct revision and path is checked once (an ingest asks for a few files at
        # thousands of revisions); an unsafe one is remembered as None.
        checked: dict[tuple[int, str], str | None] = {}

        def check(kind: int, value: str) -> str | None:
            key = (kind, value)
            if key not in checked:
                try:
                    checked[key] = validate_rev(value) if kind == 0 else validate_repo_path(value)
                except InvalidRef:
                    checked[key] = None
            return checked[key]

        for rev, path in asked:
            safe_rev, safe_path = check(0, rev), check(1, path)
            if safe_rev is None or safe_path is None:
                continue  # an unsafe path reads as missing here (file_at raises for it)
            safe[(rev, path)] = (safe_rev, safe_path)
        pairs = set(safe.values())
        if not pairs:
            return found
        # 1. the parent trees: the file's mode and blob id (and its size from the blob's header).
        dirs = sorted({(rev, path.rpartition("/")[0]) for rev, path in pairs})
        trees = _batch_objects(self._git, [f"{rev}:{d}" for rev, d in dirs])
        blob_of: dict[tuple[str, str], str] = {}
        for (rev, d), obj in zip(dirs, trees, strict=True):
            if obj is None or obj[0] != "tree":
                continue
            # A SHA-256 repository's trees hold 32-byte ids (its revisions are 64 hex digits).
            for mode, name, oid in _tree_entries(obj[1], 32 if len(rev) == 64 else 20):
                if mode in ("100644", "100755"):
                    blob_of[(rev, f"{d}/{name}" if d else name)] = oid
        # 2. the blobs, each once.
        oids = sorted({blob_of[p] for p in pairs if p in blob_of})
        blobs = dict(zip(oids, _batch_objects(self._git, oids), strict=True))
        for key, pair in safe.items():
            blob_id = blob_of.get(pair, "")
            obj = blobs.get(blob_id) if blob_id else None
            if obj is not None and obj[0] == "blob" and len(obj[1]) <= self.max_file_bytes:
                found[key] = (blob_id, obj[1])
        return found

    def blobs(self, blob_ids: Iterable[str]) -> dict[str, bytes | None]:
        """Read blobs by id with one `git cat-file --batch` run: each content, or None where
        `files_at` would give None (missing, not a blob, over `max_file_bytes`)."""
        return self.blobs_start(blob_ids)()

    def blobs_start(self, blob_ids: Iterable[str]) -> BlobsRead:
        """`blobs`, with git started now: call the result for the answer (GitError then, if any).

        The caller works meanwhile (the ingest parses the next batch while git reads the blobs).
        """
        return _blobs_start(self._git, blob_ids, self.max_file_bytes)

    def blob_reader(self) -> tuple[str, dict[str, str], int]:
        """What another process needs to read this mirror's blobs (`read_blobs`): the mirror's path,
        git's environment without the remote's credentials (a local read needs none) and the size cap.
        """
        env = {**_base_env(None, None, allow_file=False, allow_http=False), "GIT_DIR": str(self.path)}
        return str(self.path), env, self.max_file_bytes

    def list_files(self, rev: str, path: str) -> list[str]:
        """Return the repository paths of all files under `path` at `rev` (sorted; [] if absent).

        A `path` naming a file lists just that file.
        """
        commit = self.rev_parse(rev)
        safe = validate_repo_path(path)
        out = self._git.run_bytes("ls-tree", "-r", "-z", "--name-only", "--full-tree", commit, "--", safe)[1]
        return sorted(_decode(name) for name in out.split(b"\x00") if name)

    def diff_paths(self, rev_a: str, path_a: str, rev_b: str, path_b: str) -> str:
        """Return the unified diff from directory `path_a` at `rev_a` to `path_b` at `rev_b`.

        Compares the two trees file by file (relative names), so two environments' overlays of one
        app diff like two versions of one directory. Headers name the full repository paths. A
        missing directory diffs as empty.
        """
        a = self._tree(self.rev_parse(rev_a), validate_repo_path(path_a))
        b = self._tree(self.rev_parse(rev_b), validate_repo_path(path_b))
        prefixes = [f"--src-prefix={path_a.rstrip('/')}/", f"--dst-prefix={path_b.rstrip('/')}/"]
        args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", *prefixes]
        return self._git.run(*args, "--end-of-options", a, b, "--")[1]

    def _tree(self, commit: str, path: str) -> str:
        code, out = self._git.run(
            "rev-parse", "--verify", "--quiet", f"{commit}:{path}", ok_codes=(0, 1, 128)
        )
        oid = out.strip()
        if code == 0 and oid:
            kind = self._git.run("cat-file", "-t", oid)[1].strip()
            if kind != "tree":
                raise InvalidRef(f"{path!r:.80} is not a directory at {commit[:12]}")
            return oid
        # The empty tree of this repository's object format (SHA-1 or SHA-256).
        return self._git.run("hash-object", "-t", "tree", "--stdin", stdin="")[1].strip()

    def diff(self, rev_a: str, rev_b: str, paths: Sequence[str] = ()) -> str:
        """Return the unified diff between two revisions, limited to `paths`."""
        a, b = validate_rev(rev_a), validate_rev(rev_b)
        safe = [validate_repo_path(p) for p in paths]
        args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", "--end-of-options", a, b, "--", *safe]
        return self._git.run(*args)[1]

    def commits_between(
        self, old: str, new: str, paths: Sequence[str] = (), *, first_parent: bool = False
    ) -> list[str]:
        """Return SHAs in `new` but not in `old` touching `paths`, newest first.

        By default git's history simplification applies (a merge that only brings in a branch's
        change is omitted; the branch commit is listed). With `first_parent` only commits on the
        mainline are walked, so a merged PR shows up as its merge commit.
        """
        a, b = validate_rev(old), validate_rev(new)
        safe = [validate_repo_path(p) for p in paths]
        flags = ["--first-parent"] if first_parent else []
        out = self._git.run("rev-list", *flags, "--end-of-options", b, f"^{a}", "--", *safe)[1]
        return out.split()


class _FileCache:
    """A bounded, thread-safe LRU of `file_at` answers at full commit SHAs (content is immutable)."""

    def __init__(self, max_entries: int = 2048, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[tuple[str, str, str], bytes | None] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> tuple[bytes | None] | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return (self._items[key],)

    def put(self, key: tuple[str, str, str], data: bytes | None) -> None:
        size = len(data or b"")
        if size > self.max_bytes // 16:
            return  # a big file would push out many overlays
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old or b"")


_FILES = _FileCache()


class BlobsRead:
    """A `GitMirror.blobs` under way (`GitMirror.blobs_start`); call it once for the answer."""

    def __init__(self, runner: _Runner, oids: list[str], max_bytes: int) -> None:
        self._oids, self._max_bytes = oids, max_bytes
        self._run = runner.batch_start("cat-file", "--batch", stdin=_names_input(oids)) if oids else None

    def __call__(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        if self._run is None:
            return out
        run, self._run = self._run, None
        for oid, obj in zip(self._oids, _parse_objects(run.finish(), len(self._oids)), strict=True):
            ok = obj is not None and obj[0] == "blob" and len(obj[1]) <= self._max_bytes
            out[oid] = obj[1] if obj is not None and ok else None
        return out

    def abandon(self) -> None:
        """End git if the answer is not wanted any more."""
        run, self._run = self._run, None
        if run is not None:
            run.abandon()


def read_blobs(
    path: str, env: Mapping[str, str], max_bytes: int, blob_ids: Iterable[str]
) -> dict[str, bytes | None]:
    """`GitMirror.blobs` from what `GitMirror.blob_reader` gave (in a process without the mirror)."""
    return _blobs_start(_Runner(Path(path), env), blob_ids, max_bytes)()


def _blobs_start(runner: _Runner, blob_ids: Iterable[str], max_bytes: int) -> BlobsRead:
    ids = set(blob_ids)
    names = "\n".join(ids)  # one check of all (no name holds a newline); else each, as it raises
    if names.count("\n") != len(ids) - 1 or not _FULL_SHA_LINES.fullmatch(names):
        ids = {validate_sha(oid, full=True) for oid in ids}
    return BlobsRead(runner, sorted(ids), max_bytes)


# Full object names (as `validate_sha(…, full=True)` returns them), one per line.
_FULL_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_FULL_SHA_LINES = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?(?:\n[0-9a-f]{40}(?:[0-9a-f]{24})?)*")


def _names_input(names: Sequence[str]) -> bytes:
    return "".join(f"{n}\n" for n in names).encode()


def _batch_objects(runner: _Runner, names: Sequence[str]) -> list[tuple[str, bytes] | None]:
    """`git cat-file --batch` over object names: (type, content) each, None when missing."""
    if not names:
        return []
    return _parse_objects(runner.batch("cat-file", "--batch", stdin=_names_input(names)), len(names))


def _parse_objects(out: bytes, count: int) -> list[tuple[str, bytes] | None]:
    objects: list[tuple[str, bytes] | None] = []
    pos = 0
    for _ in range(count):
        end = out.index(b"\n", pos)
        header = out[pos:end].split(b" ")
        pos = end + 1
        if len(header) != 3 or not header[2].isdigit():  # "<name> missing" / "ambiguous"
            objects.append(None)
            continue
        size = int(header[2])
        objects.append((_decode(header[1]), out[pos : pos + size]))
        pos += size + 1
    return objects


def _tree_entries(tree: bytes, width: int) -> Iterator[tuple[str, str, str]]:
    """Yield (mode, name, object id) of a raw tree object (`<mode> <name>\\0<binary id>` entries)."""
    pos, size = 0, len(tree)
    while pos < size:
        nul = tree.index(b"\x00", pos)
        mode, _, name = tree[pos:nul].partition(b" ")
        oid = tree[nul + 1 : nul + 1 + width].hex()
        pos = nul + 1 + width
        yield _decode(mode).rjust(6, "0"), _decode(name), oid
