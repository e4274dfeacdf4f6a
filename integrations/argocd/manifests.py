"""Rendered manifests as Argo CD's repo-server produces them (GetManifests, Argo CD 3.6).

Reference: swagger.json paths./api/v1/applications/{name}/manifests.get (repositoryManifestResponse):
`manifests` is a list of JSON *strings*, one per object; core Secrets arrive with their values masked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from integrations.http import JsonReader, ParseError


@dataclass(frozen=True)
class ManifestSet:
    """The objects Argo CD renders for an app at a revision (or, multi-source, at revisions)."""

    objects: tuple[dict[str, Any], ...]
    revision: str  # the resolved revision (the first source's for multi-source apps)
    namespace: str
    server: str
    source_type: str


def parse_manifest_response(data: Any) -> ManifestSet:
    """Decode a repositoryManifestResponse; each manifest string must hold one JSON object."""
    r = JsonReader(data)
    objects: list[dict[str, Any]] = []
    for i, text in enumerate(r.array("manifests")):
        if not isinstance(text, str):
            raise ParseError(f"$.manifests[{i}]: expected a JSON string")
        try:
            obj = json.loads(text)
        except ValueError:
            raise ParseError(f"$.manifests[{i}]: not valid JSON") from None
        if obj is None:
            continue  # an empty document
        if not isinstance(obj, dict):
            raise ParseError(f"$.manifests[{i}]: not a JSON object")
        objects.append(obj)
    return ManifestSet(
        objects=tuple(objects),
        revision=r.text("revision"),
        namespace=r.text("namespace"),
        server=r.text("server"),
        source_type=r.text("sourceType"),
    )
