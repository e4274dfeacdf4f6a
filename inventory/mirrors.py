"""Reach a repository's bare Git mirror: the one accessor for the whole portal.

Each repository has one mirror at MIRRORS_DIR/<name>.git, cloned and fetched by the Git ingest;
promotions, rollbacks and the pages read the same mirror (promotions fetch it, throttled, when
they need a fresh view). The forge token only ever reaches git's environment.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from integrations.gitrepo import GitMirror

from .models import GitRepository


def mirror_path_for(repo: GitRepository) -> Path:
    """Return where the repository's bare mirror lives (it may not exist yet)."""
    return Path(settings.MIRRORS_DIR) / f"{repo.name}.git"


def mirror_exists(repo: GitRepository) -> bool:
    """Tell whether the repository has been mirrored (readers that must not clone check this)."""
    return (mirror_path_for(repo) / "HEAD").exists()


def mirror_for(repo: GitRepository) -> GitMirror:
    """Return the bare mirror of a repository (token only in git's environment)."""
    return GitMirror(
        mirror_path_for(repo),
        repo.url,
        token=str(repo.token) if repo.token else None,
        allow_http=repo.allow_http,
        # file:// remotes are how the sandbox serves its repositories; never in production.
        allow_file=settings.SANDBOX_ENABLED and not settings.PRODUCTION,
        max_file_bytes=settings.GIT_MAX_FILE_BYTES,
    )
