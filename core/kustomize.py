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


def read_kustomization(text: str | bytes | None) -> Kustomization:
    """Parse a kustomization file; raise KustomizationError naming the problem when it is not one.

    Empty text reads as an empty kustomization. Image entries without a `name` are skipped
    (kustomize ignores them too); remote resources (URLs) are kept as written.
    """
    source = _text(text)
    try:
        data = YAML(typ="base", pure=True).load(source)
    except YAMLError as exc:
        first = str(exc).strip().splitlines()
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or (first[0] if first else "parse error")
        raise KustomizationError(f"not valid YAML ({where}{problem})") from None
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
