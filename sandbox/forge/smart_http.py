"""Git smart HTTP by delegating to `git http-backend` as a CGI program (what GitHub speaks for clones)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_GIT_PATH = re.compile(
    r"^/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)(?:\.git)?"
    r"(?P<rest>/(?:info/refs|git-upload-pack|git-receive-pack))$"
)
CGI_TIMEOUT = 300  # seconds; large pushes of the demo repo stay far below this


@dataclass(frozen=True)
class GitTarget:
    owner: str
    repo: str
    rest: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def path_info(self) -> str:
        """CGI path with `.git` restored, since GitHub also serves `https://host/o/r` without it."""
        return f"/{self.owner}/{self.repo}.git{self.rest}"


@dataclass
class CgiResult:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def git_target(path: str) -> GitTarget | None:
    found = _GIT_PATH.match(path)
    if not found or ".." in path:
        return None
    return GitTarget(found["owner"], found["repo"], found["rest"])


def wants_push(target: GitTarget, query_string: str) -> bool:
    return target.rest == "/git-receive-pack" or "service=git-receive-pack" in query_string


def run_http_backend(
    repos_dir: Path,
    *,
    method: str,
    path: str,
    query_string: str,
    headers: dict[str, str],
    body: bytes,
    remote_user: str | None,
    remote_addr: str,
) -> CgiResult:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "GIT_PROJECT_ROOT": str(Path(repos_dir).resolve()),
        "GIT_HTTP_EXPORT_ALL": "1",
        # Pushes are authorised by us before the CGI runs, so the backend may always accept them.
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.receivepack",
        "GIT_CONFIG_VALUE_0": "true",
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query_string,
        "CONTENT_TYPE": headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": remote_addr,
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    if remote_user:
        env["REMOTE_USER"] = remote_user
    if headers.get("content-encoding"):
        env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]  # gzip'd upload-pack requests
    if headers.get("git-protocol"):
        env["GIT_PROTOCOL"] = headers["git-protocol"]  # protocol v2 negotiation
    proc = subprocess.run(
        ["git", "http-backend"], input=body, capture_output=True, env=env, timeout=CGI_TIMEOUT, check=False
    )
    return parse_cgi_output(proc.stdout, proc.stderr)


def parse_cgi_output(raw: bytes, stderr: bytes = b"") -> CgiResult:
    """Split CGI output into status, headers and body; a missing Status header means 200."""
    split_at, sep_len = raw.find(b"\r\n\r\n"), 4
    lf_at = raw.find(b"\n\n")
    if split_at < 0 or (0 <= lf_at < split_at):
        split_at, sep_len = lf_at, 2
    if split_at < 0:
        return CgiResult(500, [("Content-Type", "text/plain")], b"git http-backend failed: " + stderr[-500:])
    status, headers = 200, []
    for line in raw[:split_at].decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        elif name:
            headers.append((name.strip(), value.strip()))
    return CgiResult(status, headers, raw[split_at + sep_len :])
