"""A bounded load test on loopback: N signed-in users reading the matrix and audit pages.

Each simulated user has its own session (signed in through the login form, like a browser) and
loops for ``seconds``: the full matrix page, the matrix's htmx refresh (HX-Request), the audit
trail and the change records, without think time. Every answer must be 200; latencies are kept
per page and summarised as p50 / p95 / p99.

Reusable: ``run_load(base_url, users=50, seconds=60)`` returns a :class:`LoadResult`;
``python -m tests.load --users 50 --seconds 60`` starts the live stack itself (tests/e2e/harness.py,
polling every 2 s meanwhile) and writes test-artifacts/load/report.md and report.json.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import requests

PAGES = {
    "matrix": ("/inventory/", {}),
    "matrix (htmx refresh)": ("/inventory/", {"HX-Request": "true"}),
    "audit trail": ("/audit/", {}),
    "change records": ("/audit/changes/", {}),
}
# Who reads what: the matrix needs viewer, the audit pages the auditor role.
READERS = {"matrix": "release_manager", "matrix (htmx refresh)": "release_manager"}


@dataclass
class LoadResult:
    users: int
    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def percentile(self, page: str | None, q: float) -> float:
        values = sorted(self.latencies[page] if page else [x for v in self.latencies.values() for x in v])
        if not values:
            return float("nan")
        index = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))  # nearest rank
        return values[index]

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for page in [*self.latencies, None]:
            values = self.latencies[page] if page else [x for v in self.latencies.values() for x in v]
            if not values:
                continue
            out[page or "all"] = {
                "requests": len(values),
                "p50_ms": round(statistics.median(values) * 1000, 1),
                "p95_ms": round(self.percentile(page, 95) * 1000, 1),
                "p99_ms": round(self.percentile(page, 99) * 1000, 1),
                "max_ms": round(max(values) * 1000, 1),
            }
        return out

    def markdown(self) -> str:
        lines = [
            f"# Load test: {self.users} concurrent users for {self.seconds:.0f} s on loopback",
            "",
            f"{self.requests} requests, {len(self.errors)} errors, "
            f"{self.requests / self.seconds:.1f} requests/s, polling every 2 s meanwhile.",
            "",
            "| page | requests | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for page, s in self.summary().items():
            lines.append(
                f"| {page} | {s['requests']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | {s['max_ms']} |"
            )
        if self.errors:
            lines += ["", "Errors (first 20):", *[f"- {e}" for e in self.errors[:20]]]
        return "\n".join(lines) + "\n"


def signed_in_session(base_url: str, username: str, password: str = "demo") -> requests.Session:
    session = requests.Session()
    form = session.get(f"{base_url}/accounts/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token, "no CSRF token on the login page"
    answer = session.post(
        f"{base_url}/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)},
        headers={"Referer": f"{base_url}/accounts/login/"},
        timeout=30,
        allow_redirects=False,
    )
    assert answer.status_code == 302, f"{username} could not sign in: {answer.status_code}"
    return session


def run_load(base_url: str, *, users: int = 50, seconds: float = 60, auditor: str = "auditor") -> LoadResult:
    """Run ``users`` concurrent readers for ``seconds``; return latencies and errors."""
    result = LoadResult(users=users, seconds=seconds)
    lock = threading.Lock()
    start = threading.Barrier(users + 1)
    # One sign-in per role (password hashing is deliberately slow); each user gets its own
    # connection pool carrying that session cookie.
    signed_in = {role: signed_in_session(base_url, role) for role in ("release_manager", auditor)}
    sessions: dict[str, list[requests.Session]] = {}
    for role, template in signed_in.items():
        sessions[role] = []
        for _ in range(users):
            session = requests.Session()
            session.cookies.update(template.cookies)
            sessions[role].append(session)
    deadline: list[float] = []

    def user(index: int) -> None:
        pages = list(PAGES.items())
        start.wait()
        turn = index
        while time.monotonic() < deadline[0]:
            name, (path, headers) = pages[turn % len(pages)]
            turn += 1
            session = sessions[READERS.get(name, auditor)][index]
            began = time.monotonic()
            try:
                answer = session.get(base_url + path, headers=headers, timeout=60, allow_redirects=False)
                took = time.monotonic() - began
                with lock:
                    if answer.status_code == 200:
                        result.latencies[name].append(took)
                    else:
                        result.errors.append(f"{name}: HTTP {answer.status_code}")
            except requests.RequestException as exc:
                with lock:
                    result.errors.append(f"{name}: {exc.__class__.__name__}: {exc}")

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for thread in threads:
        thread.start()
    deadline.append(time.monotonic() + seconds)
    start.wait()
    for thread in threads:
        thread.join(seconds + 90)
    return result


def write_report(result: LoadResult, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(
        json.dumps(
            {
                "users": result.users,
                "seconds": result.seconds,
                "errors": result.errors[:100],
                "pages": result.summary(),
            },
            indent=2,
        )
    )
    path = directory / "report.md"
    path.write_text(result.markdown())
    return path
