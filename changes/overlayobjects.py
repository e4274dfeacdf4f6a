"""The objects an overlay declares, read from Git without kustomize: the checklist's fallback.

When Argo CD's rendering of a change is not available (before its branch exists), the checklist
runs on what the overlay's kustomization lists: its `resources:` followed (files and directories,
inside the repository, depth and count capped), YAML documents parsed safely, and the `images:` pins
applied to the containers. Patches, generators and Helm are not applied: Argo CD's rendering is
the real thing, this is the approximation the gate names as "read from <overlay>".
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from core.kustomize import KustomizationError, KustomizeImage, read_kustomization
from integrations.gitrepo import InvalidRef, validate_repo_path


def image_name(reference: str) -> str:
    """Return an image reference without its tag and digest (a registry port is kept)."""
    ref = reference.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


MAX_MANIFEST_FILES = 60


def overlay_objects(
    read: Callable[[str], str | None], overlay_dir: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Follow kustomization `resources:` from `overlay_dir`; return (objects, problems).

    The fallback when Argo CD's rendering is not available: plain kustomize resources with the
    overlays' `images:` pins applied (no patches, generators or Helm).
    """
    yaml = YAML(typ="safe")
    docs: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: set[str] = set()
    images_pinned: list[KustomizeImage] = []

    def visit(path: str, depth: int) -> None:
        if path in seen or len(seen) >= MAX_MANIFEST_FILES or depth > 5:
            return
        seen.add(path)
        text = read(path)
        if text is None:
            kustomization = read(posixpath.join(path, "kustomization.yaml"))
            if kustomization is None:
                problems.append(f"{path} not found")
                return
            visit_kustomization(posixpath.join(path, "kustomization.yaml"), kustomization, depth)
            return
        if posixpath.basename(path) in ("kustomization.yaml", "kustomization.yml"):
            visit_kustomization(path, text, depth)
            return
        try:
            for doc in yaml.load_all(text):
                if isinstance(doc, dict):
                    docs.append(doc)
        except YAMLError:
            problems.append(f"{path} is not valid YAML")

    def visit_kustomization(path: str, text: str, depth: int) -> None:
        try:
            kustomization = read_kustomization(text)
        except KustomizationError as exc:
            problems.append(f"{path}: {exc}")
            return
        images_pinned.extend(kustomization.images)
        base = posixpath.dirname(path)
        for rel in kustomization.resources:
            if "://" in rel:
                continue
            target = posixpath.normpath(posixpath.join(base, rel))
            try:
                validate_repo_path(target)
            except InvalidRef:
                problems.append(f"resource {rel!r} leaves the repository")
                continue
            visit(target, depth + 1)

    visit(posixpath.join(overlay_dir, "kustomization.yaml"), 0)
    # The overlay's pins win over the base's (visited first: the first entry per name applies).
    pins: dict[str, KustomizeImage] = {}
    for image in images_pinned:
        pins.setdefault(image.name, image)
    for doc in docs:
        pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                pin = pins.get(image_name(container["image"]))
                if pin is not None and pin.version:
                    container["image"] = pin.reference
    return docs, problems
