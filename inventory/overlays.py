"""Diff two environments' overlay files of an app, from the mirror."""

from __future__ import annotations

from dataclasses import dataclass

from integrations.gitrepo import GitError

from .mirrors import mirror_exists, mirror_for
from .models import Application, Environment


@dataclass(frozen=True)
class OverlayDiff:
    """A unified diff of two environments' overlays, or why there is none."""

    left: str
    right: str
    left_revision: str
    right_revision: str
    text: str
    error: str = ""


def overlay_diff(
    *,
    application: Application,
    left: Environment,
    right: Environment,
    left_revision: str = "",
    right_revision: str = "",
) -> OverlayDiff:
    """Return a unified diff of two environments' overlay files for an app (left → right)."""
    repo = application.repository
    if repo is None:
        return OverlayDiff(left.name, right.name, "", "", "", "no repository configured for this app")
    if not mirror_exists(repo):
        return OverlayDiff(left.name, right.name, "", "", "", "the repository has not been mirrored yet")
    mirror = mirror_for(repo)
    try:
        lrev = mirror.rev_parse(left_revision or f"refs/heads/{left.branch}")
        rrev = mirror.rev_parse(right_revision or f"refs/heads/{right.branch}")
        lpath, rpath = left.app_path(application.name), right.app_path(application.name)
        # File by file, relative to each overlay directory (a file only on one side is all +/-).
        text = mirror.diff_paths(lrev, lpath, rrev, rpath)
        return OverlayDiff(left.name, right.name, lrev, rrev, text)
    except GitError as exc:
        return OverlayDiff(left.name, right.name, "", "", "", str(exc)[:500])
