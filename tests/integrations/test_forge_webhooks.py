"""Webhook signature checks and parsing with the real payload files."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from integrations.forges.webhooks import (
    WebhookPayloadError,
    parse_webhook,
    verify_gitea_signature,
    verify_github_signature,
    verify_gitlab_token,
    verify_signature,
)
from tests.integrations.integration_fakes import FIXTURES

SECRET = b"It's a Secret to Everybody"


def payload(name: str) -> bytes:
    return (FIXTURES / "webhooks" / name).read_bytes()


def sign(body: bytes) -> str:
    return hmac.new(SECRET, body, hashlib.sha256).hexdigest()


def test_github_documented_signature_example() -> None:
    # Example from docs.github.com "Validating webhook deliveries".
    header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

    assert verify_github_signature(SECRET, b"Hello, World!", header)


def test_github_signature_on_real_payload() -> None:
    body = payload("github-pull_request-closed-merged.json")
    header = "sha256=" + sign(body)

    assert verify_github_signature(SECRET, body, header)
    assert not verify_github_signature(SECRET, body + b" ", header)
    assert not verify_github_signature(SECRET, body, sign(body))  # prefix required
    assert not verify_github_signature(SECRET, body, None)
    assert not verify_github_signature(b"", body, header)
    assert verify_signature("github", SECRET, {"X-Hub-Signature-256": header}, body)


def test_gitea_signature_is_bare_hex() -> None:
    body = payload("gitea-push.json")

    assert verify_gitea_signature(SECRET, body, sign(body))
    assert not verify_gitea_signature(SECRET, body, "sha256=" + sign(body))
    assert not verify_gitea_signature(SECRET, body.replace(b"master", b"main"), sign(body))
    assert verify_signature("gitea", SECRET, {"x-gitea-signature": sign(body)}, body)


def test_gitlab_token_is_compared_verbatim() -> None:
    assert verify_gitlab_token(SECRET, SECRET.decode())
    assert not verify_gitlab_token(SECRET, "wrong")
    assert not verify_gitlab_token(SECRET, None)


def test_github_pull_request_merged() -> None:
    event = parse_webhook(
        "github",
        {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d-1"},
        payload("github-pull_request-closed-merged.json"),
    )

    assert (event.kind, event.action, event.pr_number, event.merged) == ("pull_request", "closed", 3, True)
    assert event.merge_commit_sha == "a21683865c088b5fe1906cf6552d15a285a4986d"
    assert (event.head_ref, event.base_ref) == ("byao1276-patch-1", "master")
    assert event.repo_full_name == "ailisp/gcbapp-buildconfig-example"
    assert event.delivery_id == "d-1"


def test_github_pull_request_closed_not_merged_has_no_merge_sha() -> None:
    event = parse_webhook(
        "github", {"x-github-event": "pull_request"}, payload("github-pull_request-closed-not-merged.json")
    )

    assert event.merged is False and event.merge_commit_sha is None


def test_github_opened_and_pushes() -> None:
    opened = parse_webhook(
        "github", {"X-GitHub-Event": "pull_request"}, payload("github-pull_request-opened.json")
    )
    push = parse_webhook("github", {"X-GitHub-Event": "push"}, payload("github-push.json"))
    created = parse_webhook("github", {"X-GitHub-Event": "push"}, payload("github-push-new-branch.json"))

    assert opened.action == "opened" and opened.head_ref == "changes" and not opened.merged
    assert (push.kind, push.ref, push.after_sha) == (
        "push",
        "refs/heads/master",
        "199eddf46df50de8d02e99bf1c5fdb4101338224",
    )
    assert created.before_sha == "0" * 40


def test_gitea_payloads() -> None:
    merged = parse_webhook(
        "gitea", {"X-Gitea-Event": "pull_request"}, payload("gitea-pull_request-closed-merged.json")
    )
    push = parse_webhook("gitea", {"X-Gitea-Event": "push"}, payload("gitea-push.json"))

    assert merged.merged and merged.pr_number == 1
    assert merged.merge_commit_sha == "a148a755b627ac79f86bf3447e41927e1f4ad259"
    assert (merged.head_ref, merged.base_ref, merged.repo_full_name) == (
        "feature",
        "master",
        "jcitizen/my-repo",
    )
    assert push.after_sha == "4522cbcefc20728a5b72b3a86af35e608622c514"


def test_gitlab_merge_request_merge() -> None:
    event = parse_webhook(
        "gitlab", {"X-Gitlab-Event": "Merge Request Hook"}, payload("gitlab-merge_request-merge.json")
    )

    assert (event.kind, event.action, event.pr_number, event.merged) == ("pull_request", "merge", 1, True)
    assert event.merge_commit_sha == "78a76ee6b4992a6baf64c59fc4c44c7323d60438"
    assert (event.head_ref, event.base_ref) == ("feature", "master")
    assert event.repo_full_name == "gitlab-org/hello-world"


def test_other_events_pass_through() -> None:
    event = parse_webhook(
        "github", {"X-GitHub-Event": "ping"}, b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    )

    assert event.kind == "ping" and event.repo_full_name == ""


@pytest.mark.parametrize(
    ("forge", "headers", "body"),
    [
        ("github", {"X-GitHub-Event": "pull_request"}, b"{not json"),
        ("github", {"X-GitHub-Event": "pull_request"}, b"[]"),
        (
            "github",
            {"X-GitHub-Event": "pull_request"},
            b'{"action": "closed", "repository": {"full_name": "a/b"}}',
        ),
        (
            "github",
            {"X-GitHub-Event": "push"},
            b'{"ref": 5, "after": "x", "repository": {"full_name": "a/b"}}',
        ),
        ("github", {}, b"{}"),
        (
            "gitlab",
            {"X-Gitlab-Event": "Merge Request Hook"},
            b'{"object_kind": "merge_request", "project": {}}',
        ),
        ("bitbucket", {}, b"{}"),
    ],
)
def test_malformed_payloads_raise(forge: str, headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(WebhookPayloadError):
        parse_webhook(forge, headers, body)
