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
import json
import posixpath
from collections.abc import Callable
from typing import Any

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
    end = start + len("images:\n")
    while end < len(text) and text[end] in " -\n":
        nl = text.find("\n", end)
        end = len(text) if nl < 0 else nl + 1
    return text[:start], text[start:end], text[end:]


def images_frame(text: str | None) -> Frame | None:
    """The frame of a kustomization that the fast YAML reader parses and that reads without error.

    Only such a text can be the `prior` of `images_value_after` (see there why).
    """
    if text is None:
        return None
    split = _images_split(text)
    if split is None:
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
