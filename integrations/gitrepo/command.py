"""The inert-git command environment: safe config, a scrubbed runner, errors sorted at the boundary."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

import git
from git.exc import GitCommandError, GitCommandNotFound

from integrations.gitrepo.errors import GitError, GitTransientError
from integrations.http import Scrubber

NETWORK_TIMEOUT = 600.0  # seconds for clone/fetch/push/ls-remote
_NETWORK_COMMANDS = frozenset({"clone", "fetch", "push", "ls-remote"})
DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024  # the portal edits manifests, not artefacts
STREAM_PIPE_BYTES = 1024 * 1024  # the pipe of a streamed git output (the default is 64 KiB)

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
            # GitPython hands stderr back decoded even when stdout stays bytes.
            stderr = err if isinstance(err, str) else _decode(err)
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

    def batch(self, *args: str, stdin: bytes) -> bytes:
        """Run a `--batch` style git command fed `stdin` at once; return its whole stdout."""
        return self.batch_start(*args, stdin=stdin).finish()

    def batch_start(self, *args: str, stdin: bytes) -> BatchRun:
        """Start `batch` and return at once: git runs while the caller works; `finish` reads it."""
        return BatchRun(self, args, stdin)

    def stream(self, *args: str) -> Iterator[bytes]:
        """Run git and yield stdout in chunks without buffering it all."""
        handle: Any = self._git.execute(["git", *args], env=self._env_for_call(None), as_process=True)
        popen = cast("subprocess.Popen[bytes]", handle.proc)
        stdout, stderr = cast(IO[bytes], popen.stdout), cast(IO[bytes], popen.stderr)
        _grow_pipe(stdout)
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


class BatchRun:
    """A `--batch` style git command fed from a file and writing to one (`_Runner.batch_start`).

    Files, not pipes: the caller reads the whole answer with one call after the process ended,
    instead of taking the GIL back once per pipe-full while other threads hold it (each time up to
    the interpreter's switch interval). `finish` returns stdout or raises GitError.
    """

    def __init__(self, runner: _Runner, args: Sequence[str], stdin: bytes) -> None:
        self._runner, self._args = runner, args
        self._files = [tempfile.TemporaryFile() for _ in range(3)]  # noqa: SIM115 - closed in finish
        stdin_file, stdout_file, stderr_file = self._files
        stdin_file.write(stdin)
        stdin_file.seek(0)
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                ["git", *args], cwd=runner.cwd, env=runner._env_for_call(None), stdin=stdin_file,
                stdout=stdout_file, stderr=stderr_file,
            )  # fmt: skip
        except FileNotFoundError:
            self._close()
            raise GitError("git executable not found") from None

    def finish(self) -> bytes:
        """Wait for git and return its stdout (once)."""
        proc, self._proc = self._proc, None
        if proc is None:
            raise GitError("git batch already finished")
        try:
            status = proc.wait()
            _, stdout_file, stderr_file = self._files
            if status != 0:
                stderr_file.seek(0)
                stderr = _decode(stderr_file.read())
                raise _git_error(self._runner._scrub(_failure(self._args, status, stderr)), stderr)
            stdout_file.seek(0)
            return stdout_file.read()
        finally:
            self._close()

    def abandon(self) -> None:
        """End a run whose answer is not wanted any more."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
        self._close()

    def _close(self) -> None:
        for file in self._files:
            file.close()


def _grow_pipe(pipe: IO[bytes]) -> None:
    """Let git run up to a megabyte ahead of a reader that is busy with what it read (Linux)."""
    # Another system, or over /proc/sys/fs/pipe-max-size: the default pipe.
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, STREAM_PIPE_BYTES)


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
