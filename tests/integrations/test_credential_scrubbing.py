"""A server that echoes our credentials never gets them into exceptions or logs.

Hostile or buggy servers (and debugging proxies) may copy the request's Authorization header into
their error message; the clients scrub every form of the credential they sent.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from integrations.argocd import ArgoCDAuthError, ArgoCDClient, ArgoCDError, ArgoCDUnavailable
from integrations.forges import ForgeError, forge_client
from integrations.gitrepo import GitError, GitMirror
from integrations.http import HttpClient, Scrubber, Secret
from tests.integrations.integration_fakes import FakeServer

TOKEN = "eyJhbGciOiJIUzI1NiJ9.argo/Secret+Token=="
FORGE_TOKEN = "ghp_ForgeSecretToken0123456789"


def _echo_forms(token: str) -> list[str]:
    """Ways a server may spell the credential it received."""
    return [
        f"Bearer {token}",
        token,
        json.dumps(token)[1:-1].replace("/", "\\/"),  # JSON with escaped slashes
        token.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D"),
        "".join(f"\\u{ord(c):04x}" for c in token),  # JSON unicode escapes: caught after decoding
    ]


def test_scrubber_removes_every_form_of_a_credential() -> None:
    basic = base64.b64encode(b"x-access-token:" + TOKEN.encode()).decode()
    scrub = Scrubber([f"Bearer {TOKEN}", f"Basic {basic}"])
    text = " | ".join([*_echo_forms(TOKEN)[:4], f"Basic {basic}", f"x-access-token:{TOKEN}"])
    cleaned = scrub(text)
    assert "Secret" not in cleaned and basic not in cleaned and "x-access-token:" not in cleaned
    assert cleaned.count("***") == 6
    assert scrub.scrub_bytes(text.encode()).decode() == cleaned
    assert Scrubber(["short"])("a short text") == "a short text", "short values are not credentials"
    assert TOKEN not in repr(scrub)


@pytest.mark.parametrize("echo", _echo_forms(TOKEN))
def test_argocd_error_messages_never_carry_the_token(server: FakeServer, echo: str, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    body = f'{{"message": "invalid session: {echo}", "code": 16}}'.encode()
    server.add("GET", "/api/v1/applications/ledger", 401, body)
    client = ArgoCDClient(server.url, TOKEN, allow_http=True)
    with pytest.raises(ArgoCDAuthError) as info:
        client.get_application("ledger")
    assert "Secret" not in str(info.value) and "invalid session" in str(info.value)
    assert "Secret" not in caplog.text


def test_argocd_in_stream_error_and_parse_errors_are_scrubbed(server: FakeServer) -> None:
    error = {"error": {"grpc_code": 16, "http_code": 401, "message": f"token {TOKEN} expired"}}
    server.add("GET", "/api/v1/stream/applications", body=f"data: {json.dumps(error)} \n\n", stream=True)
    client = ArgoCDClient(server.url, TOKEN, allow_http=True)
    with pytest.raises(ArgoCDAuthError) as info:
        list(client.watch_applications())
    assert TOKEN not in str(info.value) and "***" in str(info.value)

    bad = {"metadata": {"name": "x"}, "status": {"health": {"status": f"Bearer {TOKEN}"}}}
    server.add("GET", "/api/v1/applications/x", body=bad)
    with pytest.raises(ArgoCDError) as parsed:
        client.get_application("x")
    assert "Secret" not in str(parsed.value) and "unknown value" in str(parsed.value)


@pytest.mark.parametrize(
    ("kind", "header"),
    [("github", f"Bearer {FORGE_TOKEN}"), ("gitea", f"token {FORGE_TOKEN}"), ("gitlab", FORGE_TOKEN)],
)
def test_forge_error_messages_never_carry_the_token(server: FakeServer, kind: str, header: str) -> None:
    body = {"message": f"Bad credentials: {header}", "errors": [{"message": f"got {FORGE_TOKEN}"}]}
    for path in (
        "/repos/acme/gitops/pulls/7",
        "/api/v4/projects/acme%2Fgitops/merge_requests/7",
        "/api/v1/repos/acme/gitops/pulls/7",
    ):
        server.add("GET", path, 401, body)
    api = server.url + ("/api/v4" if kind == "gitlab" else "/api/v1" if kind == "gitea" else "")
    client = forge_client(kind, api, FORGE_TOKEN, "acme/gitops", allow_http=True)
    with pytest.raises(ForgeError) as info:
        client.get_pull_request(7)
    assert FORGE_TOKEN not in str(info.value) and "Bad credentials" in str(info.value)


def test_git_stderr_is_scrubbed(tmp_path: Path) -> None:
    """A remote's error text reaches GitError through stderr; the token never does."""
    mirror = GitMirror(tmp_path / "m.git", "https://git.invalid/acme/gitops.git", token=FORGE_TOKEN)
    mirror.path.mkdir()
    mirror._git.run("init", "--quiet", "--bare", "--", str(mirror.path))
    with pytest.raises(GitError) as info:
        # `git config` with an option-like key fails and prints the key back on stderr.
        mirror._git.run("config", "--get", f"remote: {FORGE_TOKEN}")
    assert FORGE_TOKEN not in str(info.value)


def test_close_aborts_a_blocked_stream_reader() -> None:
    # A server that sends headers and then nothing: the reader blocks until close() aborts it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        time.sleep(10)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    client = ArgoCDClient(f"http://127.0.0.1:{port}", TOKEN, allow_http=True)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            list(client.watch_applications())
            outcome.append(None)
        except ArgoCDError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)
    started = time.monotonic()
    client.close()
    reader.join(5)
    listener.close()
    assert not reader.is_alive() and time.monotonic() - started < 3
    assert outcome and (outcome[0] is None or isinstance(outcome[0], ArgoCDUnavailable))


def test_http_client_scrubs_bodies_it_returns(server: FakeServer) -> None:
    server.add("GET", "/echo", 200, {"seen": f"Bearer {TOKEN}"})
    http = HttpClient(server.url, auth_headers={"Authorization": Secret(f"Bearer {TOKEN}")}, allow_http=True)
    assert http.request("GET", "/echo").json() == {"seen": "***"}
    assert http.scrub(f"x {TOKEN} y") == "x *** y"
