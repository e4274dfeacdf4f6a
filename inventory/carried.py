"""What a promotion carries out of an environment: the one rule behind "commits waiting".

A promotion copies only part of the source overlay into the target: the image pins
(`kustomize-images`), some values of a values file (`helm-values`) or a few listed files
(`copy-paths`). A commit to the source overlay that changes anything else (a stage-only log level
beside the pin, a stage-only patch) never reaches the target, so neither the pipeline lane, the
matrix's "behind" nor the promotion preview may count or list it.

`carried_value` is that rule: the content a promotion from the source would copy, read at one
revision. A commit carries something when its value differs from its first parent's. The ingest
evaluates it once per commit touching an overlay (`CommitTouch.carried`, bulk reads) for the lane
and the matrix; the preview evaluates the same function on the revisions it walks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from core.kustomize import (
    Kustomization,
    KustomizationError,
    _NotSimple,
    _simple_yaml,
    kustomization_of,
    read_kustomization,
)

if TYPE_CHECKING:
    from .models import Application, Environment

FileReader = Callable[[str], "str | None"]
UNREADABLE = "unreadable"  # the carried files cannot be parsed: any change to them counts


def _options(app: Application) -> dict[str, Any]:
    return app.strategy_options if isinstance(app.strategy_options, dict) else {}


def _rel_files(app: Application) -> list[str]:
    options = _options(app)
    strategy = app.strategy or "kustomize-images"
    if strategy == "copy-paths":
        paths = options.get("paths")
        return [p for p in paths if isinstance(p, str) and p] if isinstance(paths, list) else []
    default = "values.yaml" if strategy == "helm-values" else "kustomization.yaml"
    file = options.get("file") or default
    return [file] if isinstance(file, str) else [default]


def carried_files(app: Application, environment: Environment) -> list[str]:
    """Return the repository paths a promotion out of `environment` reads for `app`."""
    try:
        base = environment.app_path(app.name).rstrip("/")
    except (KeyError, IndexError, ValueError):
        return []
    return [posixpath.normpath(posixpath.join(base, rel)) for rel in _rel_files(app)]


def carried_value(app: Application, environment: Environment, read: FileReader) -> str:
    """Return a digest of what a promotion out of `environment` copies, reading files with `read`."""
    strategy = app.strategy or "kustomize-images"
    files = carried_files(app, environment)
    texts = [read(path) for path in files]
    value: Any
    if strategy == "copy-paths":
        value = texts
    elif strategy == "helm-values":
        value = _helm_values(texts[0] if texts else None, _options(app).get("paths") or ["image.tag"])
    else:
        value = _images(texts[0] if texts else None)
    return _digest(value)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _images(text: str | None) -> Any:
    if text is None:
        return None
    try:
        kustomization = read_kustomization(text)
    except KustomizationError:
        return [UNREADABLE, text]
    return _image_pins(kustomization)


def _image_pins(kustomization: Kustomization) -> list[tuple[str, str, str, str]]:
    return sorted((i.name, i.new_name, i.new_tag, i.digest) for i in kustomization.images)


def _helm_values(text: str | None, paths: Any) -> Any:
    if text is None:
        return None
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError:
        return [UNREADABLE, text]
    values = []
    for dotted in paths if isinstance(paths, list) else []:
        node = data
        for key in str(dotted).split("."):
            node = node.get(key) if isinstance(node, dict) else None
        values.append(str(node) if node is not None else None)
    return values


def helm_image_version(text: str | bytes | None) -> str:
    """Return the image version a Helm values file pins: `image.digest`, else `image.tag` ("" if none).

    The values the `helm-values` strategy copies by default (`image.tag`), read as `carried_value`
    reads them; the digest wins when the file pins one, as for kustomize's `images:`.
    """
    if not text:
        return ""
    digest, tag = _helm_values(
        text if isinstance(text, str) else text.decode("utf-8", "replace"), ["image.digest", "image.tag"]
    )
    if digest == UNREADABLE:
        return ""
    return str(digest or tag or "")


# A cheaper equal of `carried_value` for the kustomize-images rule, for a history of one file --------

Frame = tuple[str, str]  # a kustomization's text before and after its `images:` block


# The lines of an `images:` block: each starts with a space or `-` (to its newline, or the end), or is empty.
_BLOCK_LINES = re.compile(r"(?:[ \-][^\n]*\n?|\n)*")


def _images_split(text: str) -> tuple[str, str, str] | None:
    """Split a text around its top-level `images:` block: (before, block, after), or None.

    The block is the line `images:` and the lines after it that are empty or start with a space or
    `-`; it ends at the first other line (a top-level key, a comment at column 0, …).
    """
    if text.startswith("images:\n"):
        start = 0
    else:
        at = text.find("\nimages:\n")
        if at < 0:
            return None
        start = at + 1
    end = _BLOCK_LINES.match(text, start + len("images:\n")).end()  # type: ignore[union-attr]
    return text[:start], text[start:end], text[end:]


def images_frame(text: str | None) -> Frame | None:
    """The frame of a kustomization that the fast YAML reader parses and that reads without error.

    Only such a text can be the `prior` of `images_value_after` (see there why). Not one whose
    block ends at a comment at column 0: the fast reader skips comments, so the indented lines
    after it may still belong to `images` (`images:`, `# c`, `  - name: a` is one image).
    """
    if text is None:
        return None
    split = _images_split(text)
    if split is None or split[2].startswith("#"):
        return None
    try:
        _simple_yaml(text)
        read_kustomization(text)
    except (_NotSimple, KustomizationError):
        return None
    return split[0], split[2]


def images_value_after(
    app: Application, environment: Environment, prior: Frame, text: str
) -> tuple[str, Frame] | None:
    """`carried_value` of a kustomize-images app whose file is `text`, knowing a `prior` frame.

    When `text` is the prior text with only its `images:` block changed, and that block alone (as
    a document) is read by the fast reader without error, it is the value of the block alone: the
    fast reader reads the lines of a top-level key up to the next line at column 0 that is not a
    `-` item, so the block parses in the document as it parses alone, and the lines around it as in
    the prior text (which parsed, `images_frame`); `read_kustomization` then takes `images` from the
    block and checked `resources` in the prior text. Returns the value and the text's frame, or
    None (then use `carried_value`). Proven equal on tricky texts in tests/inventory.
    """
    if (app.strategy or "kustomize-images") != "kustomize-images":
        return None
    split = _images_split(text)
    if split is None or (split[0], split[2]) != prior:
        return None
    block = split[1]
    if not carried_files(app, environment):
        return None  # no file: no value to compare
    try:
        # As `read_kustomization` reads the block: the fast reader's document, then its images.
        kustomization = kustomization_of(_simple_yaml(block))
    except (_NotSimple, KustomizationError):
        return None  # not read by the fast reader, or images that do not read: the whole text counts
    return _digest(_image_pins(kustomization)), prior


# The kustomize-images value in a comparable form, for the first ingest's cache by blob id -----------

# `_images(text)` without the digest: None (no file), ("unreadable", text), or ("pins", the sorted
# pins). Two texts have equal `carried_value`s exactly when these are equal (`_digest` is JSON of
# the same data, and the three shapes never give the same JSON), so no JSON or hash per text.
ImagesValue = tuple[str, Any] | None


def images_value(
    text: str | None, sections: dict[str, Any] | None = None
) -> tuple[ImagesValue, Frame | None]:
    """`_images(text)` as an ImagesValue, with `images_frame(text)`, from one read of the text.

    With `sections`, the fast reader reads the text by sections cached there
    (`simple_yaml_by_sections`).
    """
    if text is None:
        return None, None
    try:
        data = _simple_yaml(text) if sections is None else simple_yaml_by_sections(text, sections)
    except _NotSimple:
        try:
            kustomization = read_kustomization(text)  # the full YAML parser, as `_images`
        except KustomizationError:
            return (UNREADABLE, text), None
        return ("pins", tuple(_image_pins(kustomization))), None
    try:
        # `read_kustomization` of a text the fast reader reads is this (`_load`).
        kustomization = kustomization_of(data)
    except KustomizationError:
        return (UNREADABLE, text), None
    split = _images_split(text)
    frame = None if split is None or split[2].startswith("#") else (split[0], split[2])  # as images_frame
    return ("pins", tuple(_image_pins(kustomization))), frame


# A one-line scalar the fast reader reads as its text (`_simple_scalar`): double-quoted without `"`
# or `\`, single-quoted without `'`, or plain without spaces, `#` or a first character YAML treats
# specially, not ending with `:`. Printable ASCII only, as `_simple_yaml` requires.
_V = (
    r"""(?:"[ !#-\[\]-~]*"|'[ -&(-~]*'"""
    r"|[A-Za-z0-9._/+=~](?:[A-Za-z0-9._/@+=:~-]*[A-Za-z0-9._/@+=~-])?)"
)
_PIN_KEY = r"(?:newName|newTag|digest)"
# A whole `images:` block of entries that start with `- name:` and hold only the pin keys, one per
# line, items at one indentation and their keys two columns further; no comments, no blank lines.
_PLAIN_BLOCK = re.compile(
    rf"images:\n(?P<i> *)- name: {_V}\n(?:(?P=i)  {_PIN_KEY}: {_V}\n)*"
    rf"(?:(?P=i)- name: {_V}\n(?:(?P=i)  {_PIN_KEY}: {_V}\n)*)*"
)
_PIN_LINE = re.compile(r"^ *(- )?(name|newName|newTag|digest): (.*)$", re.MULTILINE)


def _pin_scalar(value: str | None) -> str:
    return "" if value is None or value in ("~", "null") else value.strip()  # as core.kustomize._scalar


def _plain_block_entries(block: str) -> list[dict[str, str]] | None:
    """`_simple_yaml(block)["images"]` for the plainest blocks (`_PLAIN_BLOCK`), else None.

    The fast reader reads such a block as a list of mappings of the scalars as written (quotes
    removed); an entry that repeats a key is left to it (it refuses).
    """
    if _PLAIN_BLOCK.fullmatch(block) is None:
        return None
    entries: list[dict[str, str]] = []
    for dash, key, raw in _PIN_LINE.findall(block):
        value = raw[1:-1] if raw[0] in "\"'" else raw
        if dash:
            entries.append({key: value})
        elif key in entries[-1]:
            return None
        else:
            entries[-1][key] = value
    return entries


def _plain_block_pins(block: str) -> tuple[tuple[str, str, str, str], ...] | None:
    """`_image_pins(kustomization_of(_simple_yaml(block)))` for the plainest blocks, else None."""
    entries = _plain_block_entries(block)
    if entries is None:
        return None
    pins = []
    for entry in entries:
        name = _pin_scalar(entry.get("name"))
        if name:
            pins.append(
                (name, _pin_scalar(entry.get("newName")), _pin_scalar(entry.get("newTag")),
                 _pin_scalar(entry.get("digest")))
            )  # fmt: skip
    return tuple(sorted(pins))


def images_value_in_frame(
    text: str, frames: set[Frame] | dict[Frame, Any], blocks: dict[str, ImagesValue] | None = None
) -> ImagesValue | None:
    """`images_value(text)[0]` when the text has a frame in `frames` (each from `images_value` or
    `images_frame`) and its `images:` block reads alone with the fast reader, else None.

    The argument of `images_value_after`: the block then parses in the document as it does alone,
    and the rest as in the text the frame came from (whatever its block was). The plainest blocks
    are read with one regular expression (`_plain_block_pins`), the others with the fast reader;
    `blocks` caches what a block reads as (a promotion copies the block of another overlay).
    """
    split = _images_split(text)
    if split is None or (split[0], split[2]) not in frames:
        return None
    block = split[1]
    if blocks is not None and block in blocks:
        return blocks[block]
    value: ImagesValue | None
    pins = _plain_block_pins(block)
    if pins is not None:
        value = ("pins", pins)
    else:
        try:
            value = ("pins", tuple(_image_pins(kustomization_of(_simple_yaml(block)))))
        except (_NotSimple, KustomizationError):
            value = None
    if blocks is not None:
        blocks[block] = value
    return value


# A line at column 0 that opens a top-level key: not blank, not a comment, not a `-` item.
_SECTION_START = re.compile(r"^[^ \n#-]", re.MULTILINE)
_REFUSED = object()  # a section the fast reader refuses
_MISSING = object()


def simple_yaml_by_sections(text: str, sections: dict[str, Any]) -> Any:
    """`_simple_yaml(text)`, reading each top-level section once across calls (`sections` caches).

    A section is a line at column 0 that opens a key and the lines up to the next such line (the
    first also holds what comes before). The fast reader reads the top-level mapping one key at a
    time, each key's lines ending at the next line at column 0 that is not a `-` item (a block
    scalar ends there too, comments and blank lines are skipped), so the text reads as the union
    of its sections read alone: when each is a mapping and no key repeats, as `_simple_yaml` does;
    otherwise, or when a section is refused, `_NotSimple` (then the full parser decides).
    """
    starts = [m.start() for m in _SECTION_START.finditer(text)]
    if len(starts) < 2:
        return _simple_yaml(text)
    cuts = [0, *starts[1:], len(text)]
    merged: dict[str, Any] = {}
    for start, end in itertools.pairwise(cuts):
        piece = text[start:end]
        data = sections.get(piece, _MISSING)
        if data is _MISSING:
            entries = _plain_block_entries(piece) if piece.startswith("images:\n") else None
            if entries is not None:
                data = {"images": entries}  # what `_simple_yaml(piece)` reads, without the reader
            else:
                try:
                    data = _simple_yaml(piece)
                except _NotSimple:
                    data = _REFUSED
            sections[piece] = data
        if data is _REFUSED or not isinstance(data, dict):
            raise _NotSimple
        for key, value in data.items():
            if key in merged:
                raise _NotSimple
            merged[key] = value
    return merged


class ImagesValuer:
    """Kustomize-images values by blob id, for the first ingest: what `_images` of each side says.

    Values are cached by blob id (the new blob of one commit is the old one of the next), with the
    frames, sections and blocks `images_value_in_frame` and `simple_yaml_by_sections` reuse. Pure
    text work: the ingest runs it in a process of its own (inventory.carried_worker) beside the
    one that parses `git log`, or in that one for a small history.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._images: dict[str, ImagesValue] = {}
        self._frames: dict[Frame, None] = {}  # frames of the kustomizations read whole without error
        self._sections: dict[str, Any] = {}  # top-level sections of kustomizations, read
        self._blocks: dict[str, ImagesValue] = {}  # images blocks, read alone

    def make_room(self, pairs: int) -> None:
        """Forget everything when `pairs` more values could pass the limit (memory stays bounded)."""
        if len(self._images) + 2 * pairs > self._limit:
            self._images.clear()
            self._frames.clear()
            self._sections.clear()
            self._blocks.clear()

    def needed(self, pairs: list[tuple[str | None, str | None]], texts: Any = ()) -> set[str]:
        """The blobs of `pairs` (before, after) neither valued already nor in `texts`."""
        known = self._images
        return {blob for pair in pairs for blob in pair if blob and blob not in known and blob not in texts}

    def changed(self, pairs: list[tuple[str | None, str | None]], texts: dict[str, str | None]) -> list[bool]:
        """Per pair (blob before, blob after): whether the carried value changed (texts: the blobs read)."""
        value = self.value
        return [value(old, texts) != value(new, texts) for old, new in pairs]

    def value(self, blob: str | None, texts: dict[str, str | None]) -> ImagesValue:
        """The kustomize-images value of a blob (None: no file), as `carried_value` compares it."""
        if not blob:
            return None
        try:
            return self._images[blob]
        except KeyError:
            pass
        text = texts.get(blob)
        frames = self._frames
        value = images_value_in_frame(text, frames, self._blocks) if text is not None and frames else None
        if value is None:
            value, frame = images_value(text, self._sections)
            if frame is not None:
                self._frames[frame] = None
        self._images[blob] = value
        return value
