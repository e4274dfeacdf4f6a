"""What Argo CD's repo-server does for the emulator: render an app's manifests at any revision.

Kustomize apps: an approximation of ``kustomize build`` for the layouts the demo repository uses
(resources, namespace, labels, images, replica patches, configMapGenerator with its hash suffix).
Helm-values apps: the chart's templates with plain ``{{ .Values.a.b }}`` substitution over the chart's
values deep-merged with the environment's values file. The portal never renders; Argo CD does.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import threading
from collections import OrderedDict
from typing import Any

from ruamel.yaml import YAML

from sandbox.argocd.git import GitReader, GitReadError
from sandbox.argocd.model import AppDef
from sandbox.repogen import parse_kustomization

# One loader per thread: the emulator serves requests on threads, and a ruamel YAML instance keeps
# its parser state on itself (two concurrent /manifests requests corrupted a shared one).
_local = threading.local()


def _yaml() -> YAML:
    loader = getattr(_local, "yaml", None)
    if loader is None:
        loader = _local.yaml = YAML(typ="safe", pure=True)
    return loader


_VALUE_RE = re.compile(r"\{\{-?\s*\.Values\.([\w.]+)\s*-?\}\}")
_CACHE_SIZE = 512
# Kinds whose pod template carries images, replicas and configMap references.
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Rollout", "Job")


class RenderError(Exception):
    """Manifest generation failed; the message reads like the repo-server's."""


class Renderer:
    """Render apps at revisions, cached by (app, revisions): a commit's content never changes."""

    def __init__(self, git: GitReader) -> None:
        self.git = git
        self._cache: OrderedDict[tuple[str, str, str], list[dict[str, Any]]] = OrderedDict()

    def render(self, d: AppDef, revision: str, values_revision: str = "") -> list[dict[str, Any]]:
        """Objects of ``d`` at commit ``revision`` (Helm: values at ``values_revision``, default the same)."""
        key = (d.name, revision, values_revision or revision)
        hit = self._cache.get(key)
        if hit is None:
            if d.source_type == "Helm":
                hit = self._helm(d, revision, values_revision or revision)
            else:
                hit = self._kustomize(d, revision)
            self._cache[key] = hit
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return [_copy(o) for o in hit]

    # ---- kustomize ----------------------------------------------------------------------------------
    def _kustomize(self, d: AppDef, rev: str) -> list[dict[str, Any]]:
        overlay_text = self._read(rev, f"{d.path}/kustomization.yaml")
        if overlay_text is None:
            raise RenderError(f"{d.path}: app path does not exist")
        overlay = parse_kustomization(overlay_text)
        objects: list[dict[str, Any]] = []
        literals: dict[str, str] = {}
        for res in _list_section(overlay_text, "resources"):
            path = posixpath.normpath(posixpath.join(d.path, res))
            base_text = self._read(rev, f"{path}/kustomization.yaml")
            if base_text is None:
                text = self._read(rev, path)
                if text is None:
                    raise RenderError(
                        f"kustomize build {d.path} failed: accumulating resources: '{path}' does not exist"
                    )
                objects += _load_all(text)
                continue
            literals.update(_literals(parse_kustomization(base_text).literals))
            for name in _list_section(base_text, "resources"):
                text = self._read(rev, f"{path}/{name}")
                if text is None:
                    raise RenderError(
                        f"kustomize build {d.path} failed: accumulating resources: "
                        f"'{path}/{name}' does not exist"
                    )
                objects += _load_all(text)
        literals.update(_literals(overlay.literals))
        config_name = f"{d.app}-config"
        if literals or "configMapGenerator" in overlay_text:
            cm = _config_map(config_name, literals)
            objects.insert(0, cm)
            _rename_config_refs(objects, config_name, cm["metadata"]["name"])
        pins = {i.name: i.reference for i in overlay.images}
        for obj in objects:
            meta = obj.setdefault("metadata", {})
            meta["namespace"] = overlay.namespace or d.namespace
            labels = meta.setdefault("labels", {})
            labels["env"] = d.env
            if obj.get("kind") in WORKLOADS:
                spec = obj.setdefault("spec", {})
                if overlay.replicas is not None and obj["kind"] != "Job":
                    spec["replicas"] = overlay.replicas
                for c in _containers(obj):
                    repo = _image_repo(str(c.get("image", "")))
                    if repo in pins:
                        c["image"] = pins[repo]
        return [_track(o, d) for o in objects]

    # ---- helm ---------------------------------------------------------------------------------------
    def _helm(self, d: AppDef, rev: str, values_rev: str) -> list[dict[str, Any]]:
        chart = d.base_path
        if self._read(rev, f"{chart}/Chart.yaml") is None:
            raise RenderError(f"{chart}: app path does not exist")
        values = _load_one(self._read(rev, f"{chart}/values.yaml") or "") or {}
        env_values_path = f"{d.path}/values.yaml"
        env_text = self._read(values_rev, env_values_path)
        if env_text is None:
            raise RenderError(
                f"Error: open $values/{env_values_path}: no such file or directory "
                f"(values file of source 2 at revision {values_rev[:7]})"
            )
        values = _merge(values, _load_one(env_text) or {})
        try:
            names = self.git._git("ls-tree", "--name-only", f"{rev}:{chart}/templates").decode().split()
        except GitReadError:
            names = []
        texts = self.git.read(
            [f"{rev}:{chart}/templates/{n}" for n in names if n.endswith((".yaml", ".yml"))]
        )
        objects: list[dict[str, Any]] = []
        for spec in sorted(texts):
            objects += _load_all(_VALUE_RE.sub(lambda m: _lookup(values, m.group(1)), texts[spec]))
        return [_track(o, d) for o in objects]

    def _read(self, rev: str, path: str) -> str | None:
        return self.git.read([f"{rev}:{path}"]).get(f"{rev}:{path}")


# ---- helpers ----------------------------------------------------------------------------------------------


def hide_secret_data(obj: dict[str, Any]) -> dict[str, Any]:
    """Mask a core Secret's values like Argo CD's API (``+`` runs; equal values get equal masks)."""
    if obj.get("kind") != "Secret" or "/" in str(obj.get("apiVersion", "v1")):
        return obj
    masks: dict[str, str] = {}
    for field in ("data", "stringData"):
        for key, value in (obj.get(field) or {}).items():
            masks.setdefault(str(value), "+" * (8 + len(masks)))
            obj[field][key] = masks[str(value)]
    return obj


def _copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


def _load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in _yaml().load_all(io.StringIO(text)) if isinstance(doc, dict)]


def _load_one(text: str) -> Any:
    return _yaml().load(io.StringIO(text))


def _list_section(text: str, key: str) -> list[str]:
    """Items of a top-level YAML list (``resources:``) in a kustomization, without comments."""
    out: list[str] = []
    inside = False
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "-")):
            inside = line.split(":", 1)[0] == key
            continue
        if inside and line.strip().startswith("- "):
            out.append(line.strip()[2:].strip().strip("\"'"))
    return out


def _literals(items: tuple[str, ...]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in items)


def _config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": dict(sorted(data.items())),
    }
    # kustomize suffixes generated names with a content hash so a change rolls the pods.
    digest = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()
    body["metadata"]["name"] = f"{name}-{_hash_suffix(digest)}"
    return body


def _hash_suffix(hex_digest: str) -> str:
    # kustomize encodes the hash with an alphabet without vowels and look-alike characters.
    alphabet = "bcdfghkmt2456789"
    return "".join(alphabet[int(c, 16)] for c in hex_digest[:10])


def _rename_config_refs(objects: list[dict[str, Any]], old: str, new: str) -> None:
    for obj in objects:
        pod = _pod_spec(obj)
        if pod is None:
            continue
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            for src in c.get("envFrom", []) or []:
                ref = src.get("configMapRef")
                if ref and ref.get("name") == old:
                    ref["name"] = new
        for vol in pod.get("volumes", []) or []:
            if (vol.get("configMap") or {}).get("name") == old:
                vol["configMap"]["name"] = new


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") not in WORKLOADS:
        return None
    spec = (((obj.get("spec") or {}).get("template") or {}).get("spec")) or None
    return spec if isinstance(spec, dict) else None


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod_spec(obj) or {}
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def _image_repo(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v)
        return out
    return over


def _lookup(values: Any, path: str) -> str:
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return "<no value>"  # what helm prints for a missing value
        node = node[part]
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def _track(obj: dict[str, Any], d: AppDef) -> dict[str, Any]:
    # Argo CD's tracking label, set by the repo-server on every rendered object.
    obj.setdefault("metadata", {}).setdefault("labels", {})["app.kubernetes.io/instance"] = d.name
    return obj
