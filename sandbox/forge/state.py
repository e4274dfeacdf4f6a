"""In-memory forge state (pulls, labels, statuses...), optionally persisted to one JSON file."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Review:
    id: int
    user: str
    state: str  # APPROVED, COMMENTED, CHANGES_REQUESTED, PENDING
    body: str
    commit_id: str
    submitted_at: str


@dataclass
class Comment:
    id: int
    user: str
    body: str
    created_at: str
    updated_at: str


@dataclass
class Pull:
    number: int
    id: int
    title: str
    body: str | None
    user: str
    head_ref: str
    base_ref: str
    head_sha: str  # last sha seen on the head branch; frozen once closed
    base_sha: str
    draft: bool = False
    state: str = "open"
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    closed_at: str | None = None
    merged_at: str | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None
    labels: list[str] = field(default_factory=list)
    requested_reviewers: list[str] = field(default_factory=list)
    requested_teams: list[str] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)

    @property
    def merged(self) -> bool:
        return self.merged_at is not None


@dataclass
class Label:
    id: int
    name: str
    color: str
    description: str | None = None


@dataclass
class CommitStatus:
    id: int
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None
    creator: str
    created_at: str
    updated_at: str


@dataclass
class CheckRun:
    id: int
    head_sha: str
    name: str
    status: str  # queued, in_progress, completed
    conclusion: str | None
    started_at: str
    completed_at: str | None
    details_url: str | None
    external_id: str
    title: str | None
    summary: str | None
    app: str


@dataclass
class Protection:
    """Branch protection: status contexts that must be green and approvals needed before merging."""

    contexts: list[str] = field(default_factory=list)
    required_approvals: int = 0


@dataclass
class RepoState:
    next_number: int = 1
    pulls: dict[int, Pull] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)
    statuses: list[CommitStatus] = field(default_factory=list)
    protection: dict[str, Protection] = field(default_factory=dict)
    check_runs: list[CheckRun] = field(default_factory=list)


@dataclass
class Delivery:
    id: str
    event: str
    action: str | None
    repo: str
    url: str
    status_code: int | None = None
    error: str | None = None
    duration_ms: int | None = None
    delivered_at: str | None = None


class ForgeState:
    """All mutable forge data behind one lock; JSON-persisted after each mutation when a file is set."""

    def __init__(self, state_file: Path | None = None) -> None:
        self.lock = threading.RLock()
        self.state_file = Path(state_file) if state_file else None
        self.repos: dict[str, RepoState] = {}
        self.next_id = 1000
        self.deliveries: deque[Delivery] = deque(maxlen=500)
        self.request_counts: Counter[str] = Counter()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=500)
        self.load()

    def repo(self, full_name: str) -> RepoState:
        with self.lock:
            return self.repos.setdefault(full_name, RepoState())

    def new_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id

    # --- persistence ------------------------------------------------------------------------
    def save(self) -> None:
        if self.state_file is None:
            return
        with self.lock:
            data = {
                "next_id": self.next_id,
                "repos": {name: asdict(repo) for name, repo in self.repos.items()},
            }
            tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            # Atomic rename so a crash mid-write never leaves a truncated state file behind.
            os.replace(tmp, self.state_file)

    def load(self) -> None:
        if self.state_file is None or not self.state_file.is_file():
            return
        data = json.loads(self.state_file.read_text())
        self.next_id = int(data.get("next_id", self.next_id))
        for name, raw in data.get("repos", {}).items():
            self.repos[name] = _repo_from_dict(raw)


def _build(cls: type, raw: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{key: value for key, value in raw.items() if key in names})


def _repo_from_dict(raw: dict[str, Any]) -> RepoState:
    pulls = {}
    for key, value in raw.get("pulls", {}).items():
        pull = _build(Pull, value)
        pull.reviews = [_build(Review, r) for r in value.get("reviews", [])]
        pull.comments = [_build(Comment, c) for c in value.get("comments", [])]
        pulls[int(key)] = pull
    return RepoState(
        next_number=int(raw.get("next_number", 1)),
        pulls=pulls,
        labels={name: _build(Label, value) for name, value in raw.get("labels", {}).items()},
        statuses=[_build(CommitStatus, s) for s in raw.get("statuses", [])],
        protection={name: _build(Protection, value) for name, value in raw.get("protection", {}).items()},
        check_runs=[_build(CheckRun, c) for c in raw.get("check_runs", [])],
    )
