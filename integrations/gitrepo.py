"""Git plumbing through GitPython's command interface (`git.Git`), never its object model.

Security rules applied to every command:
- refs, SHAs, paths and remote URLs are validated before they reach argv, and revisions are
  placed after `--end-of-options` / paths after `--` so nothing user-derived is read as an option;
- tokens reach git only through `GIT_CONFIG_*` environment variables (an `http.<origin>.extraHeader`
  scoped to the remote's origin), never argv, URLs or repository config;
- no prompts (`GIT_TERMINAL_PROMPT=0`), no user/system config, protocols restricted with
  `GIT_ALLOW_PROTOCOL`.

Repository content is data, never code (every command, mirror and workspace alike):
- `core.symlinks=false`: a symlink in the repository is checked out as a plain file holding the link
  text, so nothing in a clone points outside it or into `.git`;
- `core.fsmonitor=false`, `core.hooksPath=/dev/null`, no submodule recursion, `protocol.file.allow`
  only for the configured sandbox; no system, global or XDG config or attributes (`HOME` is an
  empty directory), so a `.gitattributes` filter or diff driver names nothing that can run: drivers
  exist only in config, and the only repository config is `.git/config`, which only git and the
  portal write;
- every read or write of a work-tree or tree path refuses (`UnsafeRepositoryContent`) a path with a
  `..`, `.git` (any case) or empty component, a symlink or submodule component in the commit's tree
  or on disk, and a file over the size cap (`max_file_bytes`).

Merge commits in `iter_commits` list their changes relative to the first parent
(`--diff-merges=first-parent`): that is what the merge brought into the branch, which is how the
portal maps a merged promotion PR to the environment paths it touched.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

import git
from git.exc import GitCommandError, GitCommandNotFound

from integrations.http import Scrubber, UnsafeURL, check_url

# ---------------------------------------------------------------------------------------------
# Exceptions


class GitError(Exception):
    """A git command failed; the message holds the command name and the tail of stderr.

    `retryable` sorts errors at the boundary: False unless a subclass knows the cause is transient.
    """

    retryable: bool = False


class GitTransientError(GitError):
    """A git command failed for a reason that may go away: a held lock, a dropped connection, a 5xx."""

    retryable = True


class InvalidRef(GitError, ValueError):
    """A ref name, SHA, path or revision failed validation or does not resolve."""


class UnsafeRepositoryContent(InvalidRef):
    """The repository holds something the portal refuses to act on (symlink, submodule, huge file).

    Permanent: retrying reads the same content. Callers fail the request with this message and audit
    it; nothing has been pushed when it is raised. A kind of InvalidRef, so readers that treat an
    unreadable path as missing (previews) stay inert rather than failing.
    """


class UnsafeRemote(GitError, ValueError):
    """A remote URL uses a transport or form we refuse (ext::, fd::, file://, option-like)."""


class RevertConflict(GitError):
    """`git revert` stopped on conflicts; the workspace was restored to where it started."""

    def __init__(self, message: str, *, sha: str, files: Sequence[str]) -> None:
        super().__init__(message)
        self.sha = sha
        self.files = tuple(files)


# ---------------------------------------------------------------------------------------------
# Validators

_SHA_RE = re.compile(r"[0-9a-f]{7,40}|[0-9a-f]{64}")
_FULL_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def validate_sha(value: str, *, full: bool = False) -> str:
    """Return a lowercase hex object name (7-40 hex, or exactly 40/64 when `full`)."""
    candidate = value.strip().lower() if isinstance(value, str) else ""
    pattern = _FULL_SHA_RE if full else _SHA_RE
    if not pattern.fullmatch(candidate):
        raise InvalidRef(f"not a commit SHA: {value!r:.80}")
    return candidate


def validate_ref_name(name: str) -> str:
    """Return `name` if it is a safe branch/ref name (git check-ref-format --branch rules)."""
    problem = _ref_problem(name) if isinstance(name, str) else "not a string"
    if problem:
        raise InvalidRef(f"invalid ref name {name!r:.80}: {problem}")
    return name


def _ref_problem(name: str) -> str | None:
    if not name or name == "@":
        return "empty or '@'"
    if name.startswith("-"):
        return "starts with '-'"
    if ".." in name or "@{" in name or "//" in name:
        return "contains '..', '@{' or '//'"
    if _REF_FORBIDDEN.search(name):
        return "contains a space, control character or one of ~^:?*[\\"
    if name.startswith("/") or name.endswith(("/", ".")):
        return "starts with '/' or ends with '/' or '.'"
    for component in name.split("/"):
        if component.startswith(".") or component.endswith(".lock"):
            return "a component starts with '.' or ends with '.lock'"
    return None


def validate_rev(value: str) -> str:
    """Return a SHA or a valid ref name; anything else (ranges, options) is refused."""
    try:
        return validate_sha(value)
    except InvalidRef:
        return validate_ref_name(value)


def validate_repo_path(path: str) -> str:
    """Return a safe repository-relative path.

    Refused: empty, absolute or option-like paths, control characters (NUL included), and `..`,
    `.`, empty or `.git` components (`.git` in any case, with trailing dots or spaces, as
    case-insensitive or Windows filesystems read it). A trailing '/' is dropped.
    """
    if not isinstance(path, str) or not path or path.startswith(("/", "-")):
        raise InvalidRef(f"invalid repository path {path!r:.80}")
    if "\x00" in path or any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise InvalidRef(f"invalid repository path {path!r:.80}: control character")
    stripped = path.rstrip("/")
    parts = stripped.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidRef(f"invalid repository path {path!r:.80}: empty, '.' or '..' component")
    if any(p.rstrip(". ").lower() == ".git" for p in parts):
        raise InvalidRef(f"invalid repository path {path!r:.80}: '.git' component")
    return stripped


def check_remote_url(url: str, *, allow_file: bool = False, allow_http: bool = False) -> str:
    """Return `url` if git may fetch from it: https (http/file only when allowed), no helpers."""
    if not isinstance(url, str) or not url or url.startswith("-") or any(ord(c) < 0x20 for c in url):
        raise UnsafeRemote(f"refusing remote URL {url!r:.80}")
    if "::" in url.split("/", 1)[0]:  # transport helpers: ext::cmd, fd::0, anything::...
        raise UnsafeRemote("remote helper URLs (ext::, fd::, ...) are refused")
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        try:
            check_url(url, allow_http=allow_http, resolve=False)
        except UnsafeURL as exc:
            raise UnsafeRemote(str(exc)) from None
        return url
    if scheme == "file" or (not scheme and url.startswith("/")):
        if not allow_file:
            raise UnsafeRemote("local (file) remotes are only allowed for the configured sandbox")
        return url
    raise UnsafeRemote(f"unsupported remote transport {scheme or 'scp-like'!r}")


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class FileChange:
    """One --name-status line: status letter, path and (for renames/copies) the old path."""

    status: str
    path: str
    old_path: str | None = None


@dataclass(frozen=True)
class CommitRecord:
    """A commit as read from `git log` (no GitPython objects)."""

    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    authored_at: datetime
    committer_name: str
    committer_email: str
    committed_at: datetime
    message: str
    changes: tuple[FileChange, ...]

    @property
    def is_merge(self) -> bool:
        """Return True for commits with more than one parent."""
        return len(self.parents) > 1

    @property
    def subject(self) -> str:
        """Return the first line of the message."""
        return self.message.split("\n", 1)[0]


# ---------------------------------------------------------------------------------------------
# Command runner

NETWORK_TIMEOUT = 600.0  # seconds for clone/fetch/push/ls-remote
_NETWORK_COMMANDS = frozenset({"clone", "fetch", "push", "ls-remote"})
DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024  # the portal edits manifests, not artefacts

# Settings that keep repository content inert, for every command (as `git -c`: highest precedence).
_SAFE_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.hooksPath", os.devnull),
    ("core.fsmonitor", "false"),
    ("core.symlinks", "false"),
    ("core.untrackedCache", "false"),
    ("core.attributesFile", os.devnull),
    ("core.protectHFS", "true"),
    ("core.protectNTFS", "true"),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("push.recurseSubmodules", "no"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
)

# stderr fragments of failures that may go away on their own: another process holds a lock, the
# connection dropped or timed out, the server answered 5xx or 429.
_TRANSIENT_GIT = re.compile(
    r"\.lock'?: File exists|Unable to create '[^']*\.lock'|cannot lock ref|could not lock config file|"
    r"another git process seems to be running|index\.lock|"
    r"Connection (?:reset|refused|timed out)|Could not resolve host|Failed to connect|Operation timed out|"
    r"remote end hung up unexpectedly|early EOF|RPC failed|unexpected disconnect|transfer closed|"
    r"The requested URL returned error: (?:5\d\d|429)|HTTP/2 stream|SSL_(?:read|write|connect)|"
    r"gnutls_handshake|timed out",
    re.IGNORECASE,
)


def _empty_home() -> str:
    """Return an empty directory used as git's HOME/XDG_CONFIG_HOME (no user config, no attributes)."""
    global _HOME
    if _HOME is None or not os.path.isdir(_HOME):
        _HOME = tempfile.mkdtemp(prefix="gitops-portal-git-home-")
    return _HOME


_HOME: str | None = None


def _base_env(
    remote_url: str | None, token: str | None, *, allow_file: bool, allow_http: bool
) -> dict[str, str]:
    protocols = ["https"] + (["http"] if allow_http else []) + (["file"] if allow_file else [])
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_SYSTEM": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
        "HOME": _empty_home(),
        "XDG_CONFIG_HOME": _empty_home(),
        # Any -c settings of the worker's own environment are dropped, never merged with ours.
        "GIT_CONFIG_PARAMETERS": "",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_ALLOW_PROTOCOL": ":".join(protocols),
        "GIT_PROTOCOL_FROM_USER": "0",
        "LC_ALL": "C",
        "LANGUAGE": "C",
        "GIT_CONFIG_COUNT": "0",
    }
    config: list[tuple[str, str]] = [
        *_SAFE_CONFIG,
        # The sandbox's local remotes only; GIT_ALLOW_PROTOCOL above says the same.
        ("protocol.file.allow", "always" if allow_file else "never"),
        ("advice.detachedHead", "false"),
        # Abort transfers slower than 1 kB/s for a minute instead of hanging a worker.
        ("http.lowSpeedLimit", "1000"),
        ("http.lowSpeedTime", "60"),
    ]
    if token and remote_url:
        parts = urlsplit(remote_url)
        origin = f"{parts.scheme}://{parts.netloc}/"
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        # Scoped to the remote's origin so the header is never sent anywhere else, and no
        # redirects so a compromised remote cannot bounce us (with the header) to another host.
        config += [
            (f"http.{origin}.extraHeader", f"Authorization: Basic {basic}"),
            ("http.followRedirects", "false"),
        ]
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    env["GIT_CONFIG_COUNT"] = str(len(config))
    return env


def _scrubber(token: str | None) -> Scrubber:
    """Scrub the token and the Basic header built from it (a remote may echo it on stderr)."""
    if not token:
        return Scrubber()
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return Scrubber([token, f"Basic {basic}"])


class _Runner:
    """Run git in one directory with a fixed, secret-bearing environment."""

    def __init__(self, cwd: Path, env: Mapping[str, str], scrub: Scrubber | None = None) -> None:
        self.cwd = cwd
        self._env = dict(env)
        self._git = git.Git(str(cwd))
        self._scrub = scrub or Scrubber()

    def __repr__(self) -> str:
        return f"_Runner({str(self.cwd)!r})"

    def _env_for_call(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = dict(self._env)
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        ok_codes: tuple[int, ...] = (0,),
    ) -> tuple[int, str]:
        """Run `git args...` and return (exit code, stdout); other exit codes raise GitError."""
        status, out, err = self._exec(args, stdin, extra_env, as_bytes=False)
        if status == -9 or (status != 0 and "Timeout" in cast(str, err) and args[0] in _NETWORK_COMMANDS):
            raise GitTransientError(f"git {args[0]} timed out after {NETWORK_TIMEOUT}s")
        if status not in ok_codes:
            raise _git_error(self._scrub(_failure(args, status, cast(str, err))), cast(str, err))
        return status, cast(str, out)

    def run_bytes(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> tuple[int, bytes]:
        """Run git and return raw stdout bytes."""
        status, out, err = self._exec(args, None, None, as_bytes=True)
        if status not in ok_codes:
            stderr = _decode(cast(bytes, err))
            raise _git_error(self._scrub(_failure(args, status, stderr)), stderr)
        return status, cast(bytes, out)

    def _exec(
        self, args: Sequence[str], stdin: str | None, extra_env: Mapping[str, str] | None, *, as_bytes: bool
    ) -> tuple[int, str | bytes, str | bytes]:
        kwargs: dict[str, Any] = {}
        with tempfile.TemporaryFile() as stdin_file:
            if stdin is not None:
                # Popen needs a real file descriptor for stdin.
                stdin_file.write(stdin.encode())
                stdin_file.seek(0)
                kwargs["istream"] = stdin_file
            if args and args[0] in _NETWORK_COMMANDS:
                # Last resort against a hung remote; http.lowSpeed* usually aborts first.
                kwargs["kill_after_timeout"] = NETWORK_TIMEOUT
            return self._exec_with(args, extra_env, as_bytes, kwargs)

    def _exec_with(
        self, args: Sequence[str], extra_env: Mapping[str, str] | None, as_bytes: bool, kwargs: dict[str, Any]
    ) -> tuple[int, str | bytes, str | bytes]:
        try:
            result = self._git.execute(
                ["git", *args],
                env=self._env_for_call(extra_env),
                with_extended_output=True,
                with_exceptions=False,
                stdout_as_string=not as_bytes,
                strip_newline_in_stdout=False,
                **kwargs,
            )
        except GitCommandNotFound:
            raise GitError("git executable not found") from None
        except GitCommandError as exc:
            status = exc.status if isinstance(exc.status, int) else -1
            raise _git_error(self._scrub(_failure(args, status, str(exc.stderr))), str(exc.stderr)) from None
        status, out, err = cast(tuple[int, Any, Any], result)
        return status, out, err

    def stream(self, *args: str) -> Iterator[bytes]:
        """Run git and yield stdout in chunks without buffering it all."""
        handle: Any = self._git.execute(["git", *args], env=self._env_for_call(None), as_process=True)
        popen = cast("subprocess.Popen[bytes]", handle.proc)
        stdout, stderr = cast(IO[bytes], popen.stdout), cast(IO[bytes], popen.stderr)
        try:
            while chunk := stdout.read(65536):
                yield chunk
            err = stderr.read()
            status = popen.wait()
            if status != 0:
                raise _git_error(self._scrub(_failure(args, status, _decode(err))), _decode(err))
        finally:
            # The consumer may stop early: do not leave a git process writing into a full pipe.
            if popen.poll() is None:
                popen.kill()
                popen.wait()


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _failure(args: Sequence[str], status: int, stderr: str) -> str:
    lines = stderr.strip().splitlines()
    # git's own verdict ("fatal: Unable to create '…/index.lock': File exists.") before its advice.
    verdict = [line for line in lines if line.startswith(("fatal:", "error:"))]
    tail = " ".join(verdict[-3:] or lines[-3:])[:500]
    return f"git {args[0] if args else ''} failed ({status}): {tail}"


def _git_error(message: str, stderr: str) -> GitError:
    """Return the error for a failed command: transient when stderr names a lock or the network."""
    if _TRANSIENT_GIT.search(stderr):
        return GitTransientError(message)
    return GitError(message)


# ---------------------------------------------------------------------------------------------
# Path safety

_MODE_SYMLINK, _MODE_GITLINK, _MODE_TREE = "120000", "160000", "040000"


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _tree_modes(runner: _Runner, commit: str, path: str) -> dict[str, tuple[str, int | None]]:
    """Return {path: (mode, size)} for `path` and each of its leading directories in `commit`.

    One `ls-tree` without -r: it lists each named directory's entries, so a symlink or submodule
    standing where a directory is expected shows up under its own name.
    """
    out = runner.run_bytes("ls-tree", "-t", "-l", "-z", "--full-tree", commit, "--", *_prefixes(path))[1]
    wanted = set(_prefixes(path))
    entries: dict[str, tuple[str, int | None]] = {}
    for record in out.split(b"\x00"):
        meta, _, name = record.partition(b"\t")
        fields = meta.split()
        decoded = _decode(name)
        if len(fields) == 4 and decoded in wanted:
            size = fields[3]
            entries[decoded] = (_decode(fields[0]), int(size) if size.isdigit() else None)
    return entries


def _check_tree_path(runner: _Runner, commit: str, path: str, *, max_bytes: int) -> str | None:
    """Refuse a path through a symlink or submodule, or naming a file over the cap; return its mode.

    None means the path does not exist in `commit`.
    """
    entries = _tree_modes(runner, commit, path)
    for prefix in _prefixes(path):
        entry = entries.get(prefix)
        if entry is None:
            return None
        mode, size = entry
        if mode == _MODE_SYMLINK:
            raise UnsafeRepositoryContent(
                f"refusing {path!r}: {prefix!r} is a symbolic link in the repository"
            )
        if mode == _MODE_GITLINK:
            raise UnsafeRepositoryContent(f"refusing {path!r}: {prefix!r} is a submodule")
        if prefix != path and mode != _MODE_TREE:
            raise UnsafeRepositoryContent(f"refusing {path!r}: {prefix!r} is a file, not a directory")
        if prefix == path and size is not None and size > max_bytes:
            raise UnsafeRepositoryContent(
                f"refusing {path!r}: {size} bytes is over the portal's limit of {max_bytes} bytes"
            )
    return entries[path][0]


# ---------------------------------------------------------------------------------------------
# Log parsing

_LOG_FORMAT = "%x1e%H%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
_HEADER_FIELDS = 9
_STATUS_RE = re.compile(r"[ACDMRTUXB][0-9]*")


def _tokens(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split a NUL-separated byte stream into decoded tokens, incrementally."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\x00")
        for token in complete:
            yield _decode(token)
    if pending:
        yield _decode(pending)


def parse_log_stream(chunks: Iterable[bytes]) -> Iterator[CommitRecord]:
    """Parse `git log -z --name-status --format=_LOG_FORMAT` output into CommitRecords."""
    tokens = _tokens(chunks)
    token = next(tokens, None)
    while token is not None:
        if not token.startswith("\x1e"):
            raise GitError(f"unexpected git log output near {token[:40]!r}")
        header = [token[1:]] + [next(tokens, "") for _ in range(_HEADER_FIELDS - 1)]
        changes: list[FileChange] = []
        token = next(tokens, None)
        # Name-status entries follow as status, path[, path] tokens; the first carries a newline.
        while token is not None and not token.startswith("\x1e"):
            status = token.strip()
            if not status:
                token = next(tokens, None)
                continue
            if not _STATUS_RE.fullmatch(status):
                raise GitError(f"unexpected name-status token {status[:20]!r}")
            first = next(tokens, "")
            if status[0] in "RC":
                changes.append(FileChange(status[0], next(tokens, ""), first))
            else:
                changes.append(FileChange(status[0], first))
            token = next(tokens, None)
        yield _record(header, changes)


def _record(fields: list[str], changes: list[FileChange]) -> CommitRecord:
    sha, parents, an, ae, ad, cn, ce, cd, message = fields
    return CommitRecord(
        sha=sha,
        parents=tuple(parents.split()),
        author_name=an,
        author_email=ae,
        authored_at=datetime.fromisoformat(ad),
        committer_name=cn,
        committer_email=ce,
        committed_at=datetime.fromisoformat(cd),
        message=message.rstrip("\n"),
        changes=tuple(changes),
    )


# ---------------------------------------------------------------------------------------------
# Mirror


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
        for key, value in (
            ("remote.origin.url", self.remote_url),
            ("remote.origin.fetch", "+refs/heads/*:refs/heads/*"),
            ("remote.origin.tagOpt", "--no-tags"),
        ):
            _, current = self._git.run("config", "--get", key, ok_codes=(0, 1))
            if current.strip() != value:
                self._git.run("config", key, value)
        if created:
            self.fetch()
        return created

    def fetch(self) -> None:
        """Fetch all branches from the remote, pruning deleted ones."""
        self._git.run("fetch", "--quiet", "--prune", "--no-tags", "origin")

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
        args = ["log", "-z", "--name-status", "--no-renames", "--diff-merges=first-parent"]
        args += [f"--format={_LOG_FORMAT}", "--no-color", "--encoding=UTF-8", "--topo-order"]
        if reverse:
            args.append("--reverse")
        args += ["--end-of-options", validate_rev(ref)]
        excluded = [validate_sha(s) for s in ([since_sha] if since_sha else [])]
        excluded += [validate_sha(s) for s in known_shas]
        args += [f"^{s}" for s in excluded]
        args.append("--")
        return parse_log_stream(self._git.stream(*args))

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
        `max_file_bytes`; a directory reads as None.
        """
        commit = self.rev_parse(rev)
        safe = validate_repo_path(path)
        mode = _check_tree_path(self._git, commit, safe, max_bytes=self.max_file_bytes)
        if mode is None or mode == _MODE_TREE:
            return None
        code, out = self._git.run_bytes("cat-file", "blob", f"{commit}:{safe}", ok_codes=(0, 128))
        return out if code == 0 else None

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


# ---------------------------------------------------------------------------------------------
# Workspace


class GitWorkspace:
    """A non-bare clone of one branch used to prepare promotion and revert commits."""

    def __init__(
        self,
        path: Path,
        remote_url: str,
        *,
        token: str | None,
        allow_file: bool,
        allow_http: bool,
        committer_name: str,
        committer_email: str,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.path = path
        self.remote_url = remote_url
        self.max_file_bytes = max_file_bytes
        self.committer = (committer_name, committer_email)
        self._env = _base_env(remote_url, token, allow_file=allow_file, allow_http=allow_http)
        self._scrubber = _scrubber(token)
        # Explicit so that a GIT_DIR in the worker's environment can never redirect us.
        self._git = _Runner(
            path, {**self._env, "GIT_DIR": str(path / ".git"), "GIT_WORK_TREE": str(path)}, self._scrubber
        )

    def __repr__(self) -> str:
        return f"GitWorkspace({str(self.path)!r})"

    @classmethod
    def clone(
        cls,
        remote_url: str,
        dest: str | os.PathLike[str],
        *,
        branch: str,
        token: str | None = None,
        allow_file: bool = False,
        allow_http: bool = False,
        committer_name: str = "GitOps Portal",
        committer_email: str = "gitops-portal@localhost",
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> GitWorkspace:
        """Clone one branch with full history (revert needs it), no tags and no submodules."""
        url = check_remote_url(remote_url, allow_file=allow_file, allow_http=allow_http)
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        ws = cls(
            target,
            url,
            token=token,
            allow_file=allow_file,
            allow_http=allow_http,
            committer_name=committer_name,
            committer_email=committer_email,
            max_file_bytes=max_file_bytes,
        )
        runner = _Runner(target.parent, ws._env, ws._scrubber)
        runner.run(
            "clone",
            "--quiet",
            "--no-tags",
            "--no-recurse-submodules",
            "--single-branch",
            "--branch",
            validate_ref_name(branch),
            "--",
            url,
            str(target),
        )
        return ws

    def _identity(self, name: str | None = None, email: str | None = None) -> dict[str, str]:
        cname, cemail = self.committer
        return {
            "GIT_AUTHOR_NAME": name or cname,
            "GIT_AUTHOR_EMAIL": email or cemail,
            "GIT_COMMITTER_NAME": cname,
            "GIT_COMMITTER_EMAIL": cemail,
        }

    def head(self) -> str:
        """Return the SHA of HEAD."""
        return self._git.run("rev-parse", "--verify", "HEAD")[1].strip()

    def create_branch(self, name: str, start: str) -> None:
        """Create and check out branch `name` at `start`."""
        self._git.run("checkout", "--quiet", "-b", validate_ref_name(name), validate_rev(start), "--")

    def write_file(self, path: str, content: bytes | str) -> None:
        """Write a regular file inside the work tree (parents created).

        Raises UnsafeRepositoryContent for a path through a symlink, a submodule or `.git`, or
        content over `max_file_bytes`.
        """
        data = content.encode() if isinstance(content, str) else content
        if len(data) > self.max_file_bytes:
            raise UnsafeRepositoryContent(
                f"refusing to write {path!r}: {len(data)} bytes is over the limit of {self.max_file_bytes}"
            )
        target = self._checked(path)
        for parent in reversed(target.relative_to(self.path).parents[:-1]):
            directory = self.path / parent
            if not directory.exists():
                directory.mkdir()
            self._lstat_dir(directory, path)
        # O_NOFOLLOW: a symlink planted between the check and the open is refused, not followed.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    def read_file(self, path: str) -> bytes | None:
        """Read a regular file from the work tree, or None if missing.

        Raises UnsafeRepositoryContent like `write_file`, and for a file over `max_file_bytes`.
        """
        target = self._checked(path)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > self.max_file_bytes:
            raise UnsafeRepositoryContent(
                f"refusing {path!r}: {st.st_size} bytes is over the portal's limit of {self.max_file_bytes} bytes"
            )
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            return handle.read(self.max_file_bytes + 1)

    def _checked(self, path: str) -> Path:
        """Return the work-tree path of a repository path that is safe to read or write.

        Checked twice: in HEAD's tree (with core.symlinks=false a committed symlink is a plain file
        on disk, but `git add` would still commit it as a link) and on disk, every component lstat'ed
        (nothing of ours creates links, so one there was planted).
        """
        safe = validate_repo_path(path)
        _check_tree_path(self._git, "HEAD", safe, max_bytes=self.max_file_bytes)
        target = self.path.joinpath(*safe.split("/"))
        current = self.path
        for part in safe.split("/"):
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                break
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeRepositoryContent(
                    f"refusing {path!r}: {current.relative_to(self.path)} is a symbolic link"
                )
            if current != target and not stat.S_ISDIR(st.st_mode):
                raise UnsafeRepositoryContent(
                    f"refusing {path!r}: {current.relative_to(self.path)} is not a directory"
                )
        return target

    def _lstat_dir(self, directory: Path, path: str) -> None:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            raise UnsafeRepositoryContent(
                f"refusing {path!r}: {directory.relative_to(self.path)} is not a directory"
            )

    def commit(
        self,
        message: str,
        *,
        author_name: str,
        author_email: str,
        trailers: Mapping[str, str] | None = None,
    ) -> str | None:
        """Stage everything and commit; return the new SHA, or None when nothing changed."""
        self._git.run("add", "--all", "--", ".")
        code, _ = self._git.run("diff", "--cached", "--quiet", ok_codes=(0, 1))
        if code == 0:
            return None
        full = _with_trailers(message, trailers or {})
        self._git.run(
            "commit",
            "--quiet",
            "--no-verify",
            "--file=-",
            stdin=full,
            extra_env=self._identity(author_name, author_email),
        )
        return self.head()

    def revert(
        self,
        shas: Sequence[str],
        *,
        mainline_for_merges: bool = True,
        trailers: Mapping[str, str] | None = None,
        author_name: str | None = None,
        author_email: str | None = None,
    ) -> list[str]:
        """Revert commits in the given order (newest first); return the new commit SHAs.

        All or nothing: on a conflict or an empty revert the branch is reset to where it started
        and RevertConflict / GitError is raised.
        """
        start = self.head()
        created: list[str] = []
        env = self._identity(author_name, author_email)
        try:
            for raw in shas:
                created.append(self._revert_one(validate_sha(raw), mainline_for_merges, trailers, env))
        except GitError:
            self._git.run("reset", "--quiet", "--hard", start)
            raise
        return created

    def revert_paths(
        self,
        shas: Sequence[str],
        *,
        paths: Sequence[str],
        trailers: Mapping[str, str] | None = None,
        author_name: str | None = None,
        author_email: str | None = None,
    ) -> list[str]:
        """Revert commits (newest first) on `paths` only; return the new commit SHAs.

        Each commit's first-parent diff, limited to `paths`, is applied in reverse (three-way, so
        later unrelated edits of the same files merge); what the commits changed elsewhere stays.
        All or nothing like `revert`: on a conflict, an empty revert or a staged symlink, submodule
        or path outside `paths`, the branch is reset to where it started and the error raised.
        """
        scope = [validate_repo_path(p) for p in paths]
        if not scope:
            raise GitError("a scoped revert needs at least one path")
        start = self.head()
        created: list[str] = []
        env = self._identity(author_name, author_email)
        try:
            for raw in shas:
                created.append(self._revert_paths_one(validate_sha(raw), scope, trailers, env))
        except GitError:
            self._git.run("reset", "--quiet", "--hard", start)
            raise
        return created

    def _revert_paths_one(
        self, sha: str, scope: list[str], trailers: Mapping[str, str] | None, env: dict[str, str]
    ) -> str:
        parents = self._git.run("rev-list", "--parents", "-n", "1", "--end-of-options", sha)[1].split()[1:]
        if not parents:
            raise GitError(f"{sha} is the root commit and cannot be reverted")
        full = self._git.run("rev-parse", "--verify", "--end-of-options", f"{sha}^{{commit}}")[1].strip()
        # The inverse of the commit against its first parent (what landed on the branch), on the scope.
        patch = self._git.run(
            "diff",
            "--binary",
            "--full-index",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            "--end-of-options",
            full,
            parents[0],
            "--",
            *scope,
        )[1]
        if patch.strip():
            code, _ = self._git.run(
                "apply", "--3way", "--index", "--whitespace=nowarn", "-", stdin=patch, ok_codes=(0, 1)
            )
            if code != 0:
                self._abort_revert_paths(full)
        self._check_staged(scope)
        code, _ = self._git.run("diff", "--cached", "--quiet", ok_codes=(0, 1))
        if code == 0:
            raise GitError(f"reverting {full} produced no change in {', '.join(scope)} (already reverted?)")
        subject = self._git.run("log", "-1", "--format=%s", "--end-of-options", full)[1].strip()
        message = (
            f'Revert "{subject}"\n\nThis reverts commit {full} in {", ".join(scope)} only; '
            "its changes elsewhere stay.\n"
        )
        self._git.run(
            "commit",
            "--quiet",
            "--no-verify",
            "--file=-",
            stdin=_with_trailers(message, trailers or {}),
            extra_env=env,
        )
        return self.head()

    def _abort_revert_paths(self, sha: str) -> None:
        conflicted = self._git.run("diff", "--name-only", "--diff-filter=U", "-z")[1].split("\x00")
        files = [f for f in conflicted if f]
        if files:
            raise RevertConflict(f"reverting {sha} conflicts in {len(files)} file(s)", sha=sha, files=files)
        raise GitError(f"reverting {sha} does not apply to the branch")

    def _check_staged(self, scope: list[str]) -> None:
        """Refuse staged symlinks, submodules and paths outside the scope (`git apply` wrote them)."""
        out = self._git.run("diff", "--cached", "--raw", "--no-renames", "-z")[1]
        fields = [f for f in out.split("\x00")]
        for meta, path in zip(fields[0::2], fields[1::2], strict=False):
            if not meta.startswith(":"):
                continue
            new_mode = meta[1:].split()[1]
            if new_mode in (_MODE_SYMLINK, _MODE_GITLINK):
                raise UnsafeRepositoryContent(
                    f"refusing {path!r}: the revert would write a link or submodule"
                )
            validate_repo_path(path)
            if not any(path == p or path.startswith(p + "/") for p in scope):
                raise GitError(f"refusing {path!r}: outside {', '.join(scope)}")

    def _revert_one(
        self, sha: str, mainline: bool, trailers: Mapping[str, str] | None, env: dict[str, str]
    ) -> str:
        parents = self._git.run("rev-list", "--parents", "-n", "1", "--end-of-options", sha)[1].split()[1:]
        args = ["revert", "--no-edit"]
        if len(parents) > 1:
            if not mainline:
                raise GitError(f"{sha} is a merge commit; reverting it needs a mainline parent")
            args += ["-m", "1"]
        code, _ = self._git.run(*args, "--end-of-options", sha, extra_env=env, ok_codes=(0, 1))
        if code != 0:
            self._abort_revert(sha)
        if trailers:
            message = self._git.run("log", "-1", "--format=%B")[1]
            amend = ["commit", "--quiet", "--amend", "--no-verify", "--file=-"]
            self._git.run(*amend, stdin=_with_trailers(message, trailers), extra_env=env)
        return self.head()

    def _abort_revert(self, sha: str) -> None:
        conflicted = self._git.run("diff", "--name-only", "--diff-filter=U", "-z")[1].split("\x00")
        files = [f for f in conflicted if f]
        self._git.run("revert", "--abort", ok_codes=(0, 128))
        if files:
            raise RevertConflict(f"reverting {sha} conflicts in {len(files)} file(s)", sha=sha, files=files)
        raise GitError(f"reverting {sha} produced no change (already reverted?)")

    def push(self, branch: str, *, force_with_lease: bool = False, expected_sha: str | None = None) -> None:
        """Push HEAD to refs/heads/<branch> on origin (optionally with a lease)."""
        name = validate_ref_name(branch)
        args = ["push", "--quiet", "--porcelain", "--no-verify"]
        if force_with_lease:
            lease = f"refs/heads/{name}" + (f":{validate_sha(expected_sha)}" if expected_sha else "")
            args.append(f"--force-with-lease={lease}")
        self._git.run(*args, "origin", f"HEAD:refs/heads/{name}")

    def remote_branch_sha(self, branch: str) -> str | None:
        """Return the branch SHA on origin, or None when it does not exist."""
        name = validate_ref_name(branch)
        out = self._git.run("ls-remote", "--heads", "origin", f"refs/heads/{name}")[1]
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref == f"refs/heads/{name}":
                return sha
        return None


def _with_trailers(message: str, trailers: Mapping[str, str]) -> str:
    body = message.rstrip("\n")
    if not trailers:
        return body + "\n"
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY.fullmatch(key) or "\n" in value or "\r" in value:
            raise InvalidRef(f"invalid trailer {key!r}")
        lines.append(f"{key}: {value}")
    return f"{body}\n\n" + "\n".join(lines) + "\n"
