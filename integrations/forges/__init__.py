"""Forge clients (GitHub, Gitea/Forgejo, GitLab) behind one `ForgeClient` interface."""

from __future__ import annotations

import requests

from integrations.forges.base import (
    BranchAlreadyExists,
    Check,
    CommitStatusState,
    CommitStatusSummary,
    Comparison,
    ForgeAuthError,
    ForgeClient,
    ForgeError,
    ForgeNotFound,
    ForgeResponseError,
    ForgeUnavailable,
    ForgeValidationError,
    MergeNotAllowed,
    PullRequest,
    PullRequestAlreadyExists,
    StatusContext,
    status_description,
)
from integrations.forges.gitea import GiteaClient
from integrations.forges.github import GitHubClient
from integrations.forges.gitlab import GitLabClient
from integrations.http import DEFAULT_TIMEOUT, Timeout

CLIENTS: dict[str, type[GitHubClient] | type[GiteaClient] | type[GitLabClient]] = {
    "github": GitHubClient,
    "gitea": GiteaClient,
    "forgejo": GiteaClient,
    "gitlab": GitLabClient,
}

__all__ = [
    "CLIENTS",
    "BranchAlreadyExists",
    "Check",
    "CommitStatusState",
    "CommitStatusSummary",
    "Comparison",
    "ForgeAuthError",
    "ForgeClient",
    "ForgeError",
    "ForgeNotFound",
    "ForgeResponseError",
    "ForgeUnavailable",
    "ForgeValidationError",
    "GitHubClient",
    "GitLabClient",
    "GiteaClient",
    "MergeNotAllowed",
    "PullRequest",
    "PullRequestAlreadyExists",
    "StatusContext",
    "forge_client",
    "status_description",
]


def forge_client(
    kind: str,
    api_url: str,
    token: str,
    repo_full_name: str,
    *,
    allow_http: bool = False,
    verify_tls: bool | str = True,
    timeout: Timeout = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
) -> ForgeClient:
    """Return the client for a forge kind ("github", "gitea"/"forgejo", "gitlab")."""
    try:
        cls = CLIENTS[kind.lower()]
    except KeyError:
        raise ForgeError(f"unknown forge kind {kind!r}") from None
    return cls(
        api_url,
        token,
        repo_full_name,
        allow_http=allow_http,
        verify_tls=verify_tls,
        timeout=timeout,
        session=session,
    )
