"""Secret scanning of a change: the file diff's added lines and the rendered objects it produces.

Every promotion and rollback is scanned in-process with detect-secrets (Yelp), its default plugin
set and default filters (AWS keys, private keys, GitHub/GitLab/Slack/Stripe/... tokens, keyword
assignments such as `password: ...`, high-entropy strings, JWTs, basic-auth URLs). A finding
blocks the change; nobody can override it: the secret must leave the change (or, for a false
positive, be listed in the repository's `.secrets.baseline`, a reviewed change of its own).

What is kept of a finding: the file (or rendered object), the line and the detector's name. The
secret's value never leaves this module: not in a gate, the database, an audit payload, a page or
a log line (detect-secrets' own log lines name files and line numbers only).

The baseline is the repository's `.secrets.baseline` (detect-secrets' JSON format) at the change's
target revision, read as untrusted data: at most BASELINE_MAX_BYTES, only `results` entries with a
40-hex `hashed_secret` count. A file-diff finding is allowlisted by an entry of the same file,
hash and type; a rendered-object finding by the hash and type in any file (the object comes from
some file of the repository). A baseline that cannot be read allowlists nothing and says so.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import io
import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detect_secrets.core.scan import _process_line_based_plugins
from detect_secrets.settings import default_settings

from .manifests import block_yaml

BASELINE_PATH = ".secrets.baseline"
BASELINE_MAX_BYTES = 1_000_000
MAX_LINE_CHARS = 4000  # longer lines are scanned in their first characters only
MAX_FINDINGS = 50
_HASH = re.compile(r"[0-9a-f]{40}")
# detect-secrets keeps its settings in a process-wide object: one scan at a time per process.
_lock = threading.Lock()


@dataclass(frozen=True)
class SecretFinding:
    """A detected secret: where and which detector; never the value."""

    file: str
    line: int
    detector: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "detector": self.detector}

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.detector}"


@dataclass(frozen=True)
class Baseline:
    """Known false positives: (file, hashed secret, type) from the repository's baseline."""

    entries: frozenset[tuple[str, str, str]] = frozenset()
    error: str = ""
    present: bool = False

    def allows(self, file: str, secret_hash: str, detector: str, *, any_file: bool) -> bool:
        if any_file:
            return any(h == secret_hash and t == detector for _f, h, t in self.entries)
        return (file, secret_hash, detector) in self.entries


def baseline_parse(text: str | bytes | None) -> Baseline:
    """Read a `.secrets.baseline` (untrusted): the allowlisted entries, or why none are."""
    if text is None:
        return Baseline()
    if len(text) > BASELINE_MAX_BYTES:
        return Baseline(
            error=f"{BASELINE_PATH} is larger than {BASELINE_MAX_BYTES} bytes: ignored", present=True
        )
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return Baseline(error=f"{BASELINE_PATH} is not valid JSON: ignored", present=True)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        return Baseline(error=f"{BASELINE_PATH} has no `results` mapping: ignored", present=True)
    entries: set[tuple[str, str, str]] = set()
    for file, items in results.items():
        if not isinstance(file, str) or not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, dict):
                continue
            digest, kind = item.get("hashed_secret"), item.get("type")
            if isinstance(digest, str) and isinstance(kind, str) and _HASH.fullmatch(digest):
                entries.add((file.removeprefix("./"), digest, kind))
    return Baseline(frozenset(entries), present=True)


# ---------------------------------------------------------------------------------------------
# Inputs: what a change adds


@dataclass(frozen=True)
class ScanInput:
    """Lines to scan under one name: a file path (its added lines) or a rendered object."""

    name: str
    lines: tuple[tuple[int, str], ...]
    rendered: bool = False


def added_lines(before: str | None, after: str) -> list[tuple[int, str]]:
    """Return (line number in `after`, text) of the lines `after` adds to `before`."""
    old, new = (before or "").splitlines(), after.splitlines()
    out: list[tuple[int, str]] = []
    for tag, _i1, _i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag in ("replace", "insert"):
            out.extend((j + 1, new[j]) for j in range(j1, j2))
    return out


def file_edit_inputs(edits: Iterable[tuple[str, str | None, str]]) -> list[ScanInput]:
    """Scan inputs for file edits given as (path, content before or None, content after)."""
    return [ScanInput(path, tuple(added_lines(before, after))) for path, before, after in edits]


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def unified_diff_inputs(diff: str) -> list[ScanInput]:
    """Scan inputs from a unified diff (git's): each file's added lines with their new line numbers."""
    files: dict[str, list[tuple[int, str]]] = {}
    current: list[tuple[int, str]] | None = None
    line_no = 0
    for raw in diff.splitlines():
        if raw.startswith("+++ "):
            path = raw[4:].split("\t", 1)[0].strip()
            path = path[2:] if path.startswith("b/") else path
            current = None if path == "/dev/null" else files.setdefault(path, [])
            continue
        if raw.startswith("--- ") or raw.startswith("diff --git "):
            continue
        match = _HUNK.match(raw)
        if match:
            line_no = int(match.group(1))
            continue
        if current is None:
            continue
        if raw.startswith("+"):
            current.append((line_no, raw[1:]))
            line_no += 1
        elif raw.startswith(" "):
            line_no += 1
    return [ScanInput(path, tuple(lines)) for path, lines in files.items()]


def object_inputs(label: str, objects: Iterable[Mapping[str, Any]]) -> list[ScanInput]:
    """Scan inputs for rendered objects: each object's YAML, and a Secret's decoded values too.

    Secrets' `data` values are base64: their decoded text is scanned as well (an AWS key hides in
    base64 from its detector). The lines are numbered within the object's YAML as scanned.
    """
    out: list[ScanInput] = []
    for obj in objects:
        if not isinstance(obj, Mapping) or not obj.get("kind"):
            continue
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
        assert isinstance(meta, Mapping)
        where = f"{meta.get('namespace')}/" if meta.get("namespace") else ""
        name = f"rendered {label} {obj.get('kind')} {where}{meta.get('name', '?')}"
        stream = io.StringIO()
        try:
            block_yaml().dump(_plain(obj), stream)
        except Exception:  # an odd value must not stop the scan: fall back to JSON
            stream = io.StringIO(json.dumps(obj, sort_keys=True, indent=1, default=str))
        lines = stream.getvalue().splitlines()
        if obj.get("kind") == "Secret" and isinstance(obj.get("data"), Mapping):
            data = obj["data"]
            for key in sorted(data, key=str):
                decoded = _b64(data[key])
                if decoded:
                    lines.extend(f"{key}: {text}" for text in decoded.splitlines())
        out.append(ScanInput(name, tuple(enumerate(lines, 1)), rendered=True))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _b64(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""


# ---------------------------------------------------------------------------------------------
# The scan


@dataclass(frozen=True)
class ScanResult:
    findings: tuple[SecretFinding, ...]
    allowlisted: int
    scanned_lines: int
    baseline_error: str = ""

    @property
    def clean(self) -> bool:
        return not self.findings


def scan(inputs: Sequence[ScanInput], *, baseline: Baseline | None = None) -> ScanResult:
    """Scan the inputs with detect-secrets' default plugins; drop what the baseline allowlists."""
    baseline = baseline or Baseline()
    findings: dict[tuple[str, int, str], SecretFinding] = {}
    allowlisted = 0
    scanned = 0
    with _lock, default_settings():
        for item in inputs:
            lines = [(n, text[:MAX_LINE_CHARS]) for n, text in item.lines]
            scanned += len(lines)
            if not lines:
                continue
            for secret in _process_line_based_plugins(lines, filename=item.name):
                detector = str(secret.type)
                if baseline.allows(item.name, secret.secret_hash, detector, any_file=item.rendered):
                    allowlisted += 1
                    continue
                line = int(secret.line_number or 0)
                findings.setdefault((item.name, line, detector), SecretFinding(item.name, line, detector))
    ordered = sorted(findings.values(), key=lambda f: (f.file, f.line, f.detector))
    return ScanResult(tuple(ordered[:MAX_FINDINGS]), allowlisted, scanned, baseline.error)


def summary(result: ScanResult) -> str:
    """One line for a gate: the findings (file, line, detector), or what was scanned."""
    if result.findings:
        shown = "; ".join(str(f) for f in result.findings[:8])
        more = f" and {len(result.findings) - 8} more" if len(result.findings) > 8 else ""
        return (
            f"{len(result.findings)} secret(s) found: {shown}{more}. Remove the secret from the change "
            f"(or allowlist a false positive in {BASELINE_PATH}); nobody can override this gate"
        )
    note = f"; {result.baseline_error}" if result.baseline_error else ""
    allow = f", {result.allowlisted} allowlisted by {BASELINE_PATH}" if result.allowlisted else ""
    return f"no secrets in {result.scanned_lines} added or rendered line(s){allow}{note}"


def redact_diff(diff: str, *, mask: str = "(hidden: {detector} found by the secret scan)") -> str:
    """Return a unified diff for display with every line detect-secrets flags replaced by a mask.

    The lines are scanned again (nothing of a value is kept between scans); a diff line keeps its
    `+`/`-`/` ` prefix so the page still shows where the secret is.
    """
    lines = diff.splitlines(keepends=True)
    body = [
        (i + 1, line[1:].rstrip("\n"))
        for i, line in enumerate(lines)
        if line[:1] in "+- " and not line.startswith(("+++ ", "--- "))
    ]
    flagged: dict[int, str] = {}
    with _lock, default_settings():
        for secret in _process_line_based_plugins(body, filename="diff"):
            flagged.setdefault(int(secret.line_number or 0), str(secret.type))
    out = []
    for i, line in enumerate(lines, 1):
        if i in flagged:
            out.append(line[:1] + mask.format(detector=flagged[i]) + ("\n" if line.endswith("\n") else ""))
        else:
            out.append(line)
    return "".join(out)
