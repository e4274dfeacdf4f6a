"""The one reader of kustomization.yaml files, and the one rule for which image is "the version".

An overlay may list several images (the app, a sidecar, a migration job). Every page, gate and
rollback plan must show the same version for the same overlay, so they all ask `image_version`:

1. the image whose `name` (else `newName`) ends, after its last "/", with the application's name;
2. else, when the overlay lists exactly one image, that image;
3. else the first image listed.

The version of the chosen image is its `digest` when it pins one, else its `newTag` (a digest is the
exact pin; kustomize renders `name@digest` for it). An overlay without images has no version ("").

Scalars are read as written (`newTag: 1.10` stays "1.10", not the number 1.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

FILENAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class KustomizationError(ValueError):
    """The text is not a kustomization we can read (invalid YAML, wrong shape)."""


@dataclass(frozen=True)
class KustomizeImage:
    """One entry of `images:`: the name in the manifests and what kustomize makes of it."""

    name: str
    new_name: str = ""
    new_tag: str = ""
    digest: str = ""

    @property
    def image(self) -> str:
        """Return the repository the workload will pull (`newName` when set)."""
        return self.new_name or self.name

    @property
    def version(self) -> str:
        """Return the pin: the digest when set, else the tag ("" when neither)."""
        return self.digest or self.new_tag

    @property
    def short_name(self) -> str:
        """Return the last path segment of `name` (what an application is usually called)."""
        return self.name.rsplit("/", 1)[-1]

    @property
    def reference(self) -> str:
        """Return the image reference kustomize writes into the manifests (the digest replaces the tag)."""
        if self.digest:
            return f"{self.image}@{self.digest}"
        return f"{self.image}:{self.new_tag}" if self.new_tag else self.image

    def __str__(self) -> str:
        return self.reference


@dataclass(frozen=True)
class Kustomization:
    """What the portal reads of a kustomization: its images and its resources."""

    images: list[KustomizeImage] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)

    def image_for(self, app: str) -> KustomizeImage | None:
        """Return the image that carries `app`'s version (the rule in this module's docstring)."""
        if not self.images:
            return None
        for image in self.images:
            if image.short_name == app:
                return image
        for image in self.images:
            if image.new_name and image.new_name.rsplit("/", 1)[-1] == app:
                return image
        return self.images[0]


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _scalar(entry: dict[str, Any], key: str) -> str:
    value = entry.get(key)
    # The base loader keeps every scalar a string; `key:` with nothing after it reads as "".
    return "" if value is None or value in ("~", "null") else str(value).strip()


class _NotSimple(Exception):
    """The text uses more YAML than the fast reader takes on: the full parser reads it."""


_KEY = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_./-]*):(?: +(.*))?")
_DOUBLE = re.compile(r'"([^"\\]*)"(?: +#.*)?')
_SINGLE = re.compile(r"'([^']*)'(?: +#.*)?")
_PLAIN_START = frozenset("-?:,[]{}#&*!|>'\"%@`")
_SIMPLE_TEXT = re.compile(r"[\x20-\x7e\n]*")


_BLOCK = re.compile(r"\|-?(?: +#.*)?")


class _Lines:
    """The significant lines of a text (indentation, body, raw line number) and the raw lines."""

    def __init__(self, raw: list[str]) -> None:
        self.raw = raw
        self.items: list[tuple[int, str, int]] = []
        for number, line in enumerate(raw):
            body = line.lstrip(" ")
            if not body or body.startswith("#"):
                continue
            if body.startswith(("---", "...", "%")) and len(line) == len(body):
                raise _NotSimple
            self.items.append((len(line) - len(body), body.rstrip(" "), number))

    def block(self, pos: int, parent: int, rest: str) -> tuple[str, int]:
        """Read the literal block scalar (`|` or `|-`) opened on line `pos`; return it and the next pos."""
        raw, start = self.raw, self.items[pos][2] + 1
        end, width = start, -1
        while end < len(raw):
            line = raw[end]
            if line:
                indent = len(line) - len(line.lstrip(" "))
                if indent == len(line):
                    raise _NotSimple  # a line of spaces only: its meaning depends on the indentation
                if width < 0:
                    width = indent
                    if width <= parent:
                        raise _NotSimple  # an empty block scalar
                if indent < width:
                    break
            end += 1
        if width < 0:
            raise _NotSimple
        body = [line[width:] for line in raw[start:end]]
        while body and not body[-1]:
            body.pop()
        text = "\n".join(body) + ("" if rest.startswith("|-") else "\n")
        while pos < len(self.items) and self.items[pos][2] < end:
            pos += 1
        return text, pos


def _simple_scalar(rest: str) -> str:
    if rest[0] == '"' or rest[0] == "'":
        match = (_DOUBLE if rest[0] == '"' else _SINGLE).fullmatch(rest)
        if match is None:
            raise _NotSimple
        return match.group(1)
    value = rest.split(" #", 1)[0].rstrip(" ")
    if not value or value[0] in _PLAIN_START or "#" in value or ": " in value or value.endswith(":"):
        raise _NotSimple
    return value


def _is_item(body: str) -> bool:
    return body == "-" or body.startswith("- ")


def _simple_node(doc: _Lines, pos: int, indent: int) -> tuple[Any, int]:
    """Read the block mapping or sequence whose lines start at `pos` with this indentation."""
    lines = doc.items
    if _is_item(lines[pos][1]):
        items: list[Any] = []
        while pos < len(lines) and lines[pos][0] == indent and _is_item(lines[pos][1]):
            rest = lines[pos][1][1:]
            content = rest.lstrip(" ")
            if not content or content.startswith(("-", "#")):
                raise _NotSimple  # an empty or nested item, or a comment where the item starts
            if _KEY.fullmatch(content):
                # `- key: v` opens a mapping at the column of `key`.
                lines[pos] = (indent + 1 + len(rest) - len(content), content, lines[pos][2])
                value, pos = _simple_node(doc, pos, lines[pos][0])
            elif _BLOCK.fullmatch(content):
                value, pos = doc.block(pos, indent, content)
            else:
                value, pos = _simple_scalar(content), pos + 1
                if pos < len(lines) and lines[pos][0] > indent:
                    raise _NotSimple
            items.append(value)
        return items, pos
    mapping: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][0] == indent:
        match = _KEY.fullmatch(lines[pos][1])
        if match is None or match.group(1) in mapping:
            raise _NotSimple
        key, rest = match.group(1), (match.group(2) or "").strip(" ")
        if _BLOCK.fullmatch(rest):
            mapping[key], pos = doc.block(pos, indent, rest)
            continue
        pos += 1
        nested = pos < len(lines) and (
            lines[pos][0] > indent or (lines[pos][0] == indent and _is_item(lines[pos][1]))
        )
        if rest and not rest.startswith("#"):
            if nested:
                raise _NotSimple
            mapping[key] = _simple_scalar(rest)
        elif nested:
            mapping[key], pos = _simple_node(doc, pos, lines[pos][0])
        else:
            mapping[key] = ""  # `key:` with nothing after it, as the base loader reads it
    if pos < len(lines) and lines[pos][0] > indent:
        raise _NotSimple
    return mapping, pos


def _simple_yaml(source: str) -> Any:
    """Read block mappings and sequences of one-line scalars, as YAML's base loader would.

    Kustomizations are almost always this simple; the pure-Python YAML parser costs about a
    millisecond per file, which the poller pays for every historic overlay it reads. Anything else
    (flow style, anchors, tags, escaped or folded scalars, tabs, several documents, non-ASCII)
    raises _NotSimple and goes to the full parser.
    """
    if not _SIMPLE_TEXT.fullmatch(source):
        raise _NotSimple
    doc = _Lines(source.split("\n"))
    if not doc.items:
        return None
    if doc.items[0][0] != 0:
        raise _NotSimple
    data, pos = _simple_node(doc, 0, 0)
    if pos != len(doc.items):
        raise _NotSimple
    return data


def _load(source: str) -> Any:
    try:
        return _simple_yaml(source)
    except _NotSimple:
        return YAML(typ="base", pure=True).load(source)


def read_kustomization(text: str | bytes | None) -> Kustomization:
    """Parse a kustomization file; raise KustomizationError naming the problem when it is not one.

    Empty text reads as an empty kustomization. Image entries without a `name` are skipped
    (kustomize ignores them too); remote resources (URLs) are kept as written.
    """
    source = _text(text)
    try:
        data = _load(source)
    except YAMLError as exc:
        first = str(exc).strip().splitlines()
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or (first[0] if first else "parse error")
        raise KustomizationError(f"not valid YAML ({where}{problem})") from None
    return kustomization_of(data)


def kustomization_of(data: Any) -> Kustomization:
    """The kustomization a parsed document describes (`read_kustomization` after the YAML)."""
    if data is None or data == "":
        return Kustomization()
    if not isinstance(data, dict):
        raise KustomizationError(f"expected a mapping at the top, got {type(data).__name__}")
    raw_images = data.get("images") or []
    if not isinstance(raw_images, list):
        raise KustomizationError("images: expected a list")
    images = [
        KustomizeImage(
            name=_scalar(entry, "name"),
            new_name=_scalar(entry, "newName"),
            new_tag=_scalar(entry, "newTag"),
            digest=_scalar(entry, "digest"),
        )
        for entry in raw_images
        if isinstance(entry, dict) and _scalar(entry, "name")
    ]
    raw_resources = data.get("resources") or []
    if not isinstance(raw_resources, list):
        raise KustomizationError("resources: expected a list")
    resources = [str(item) for item in raw_resources if isinstance(item, str) and item]
    return Kustomization(images=images, resources=resources)


def image_version(text: str | bytes | None, app: str) -> str:
    """Return the version of `app` pinned by a kustomization ("" when it pins no image).

    Raises KustomizationError when the text cannot be read; callers that show a best-effort
    version catch it.
    """
    image = read_kustomization(text).image_for(app)
    return image.version if image else ""
