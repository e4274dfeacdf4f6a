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

from core.kustomize import KustomizationError, read_kustomization

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
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _images(text: str | None) -> Any:
    if text is None:
        return None
    try:
        kustomization = read_kustomization(text)
    except KustomizationError:
        return [UNREADABLE, text]
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
