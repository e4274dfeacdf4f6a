"""Promotion strategies: the YAML/file edits that make the target reference what the source runs.

- `kustomize-images` (default): the `images:` entries of <target dir>/kustomization.yaml get the
  newTag/digest the source runs (Argo CD's reported images, else the source overlay at the
  revision Argo CD reports as synced).
- `helm-values`: `strategy_options = {"file": "values.yaml", "paths": ["image.tag", ...]}`: the
  listed dotted paths are copied from the source's values file (at the source's synced revision).
- `copy-paths`: `strategy_options = {"paths": ["config.yaml", ...]}`: the listed files are copied
  from the source directory to the target directory.

YAML is edited round-trip with ruamel.yaml (comments, order, quoting and indentation kept) so the
pull request's diff is exactly the changed lines; a file that ruamel cannot reproduce byte for
byte gets a targeted in-place replacement of the scalar instead.
"""

from __future__ import annotations

import functools
import io
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.util import load_yaml_guess_indent

from core.diffs import diff_text
from core.kustomize import KustomizationError, read_kustomization
from integrations.gitrepo import InvalidRef, UnsafeRepositoryContent, validate_repo_path

if TYPE_CHECKING:
    from inventory.models import Application, Environment

STRATEGIES = ("kustomize-images", "helm-values", "copy-paths")
FileReader = Callable[[str], "str | None"]


class StrategyError(Exception):
    """The edit cannot be computed (missing file, unparsable YAML, bad configuration)."""


# ---------------------------------------------------------------------------------------------
# Image references


_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")


@dataclass(frozen=True)
class ImageRef:
    """registry/name[:tag][@digest]."""

    name: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        ref = ref.strip()
        name, _, digest = ref.partition("@")
        tag = ""
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
        return cls(name=name, tag=tag, digest=digest)

    @property
    def version(self) -> str:
        """The pin shown to humans: the digest when pinned by digest, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class FileEdit:
    """One file of the pull request: content before (None: new file) and after."""

    path: str
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def diff(self) -> str:
        """Unified diff as git shows it (a/ b/ prefixes)."""
        return diff_text(
            self.before or "",
            self.after,
            old_label=f"a/{self.path}" if self.before is not None else "/dev/null",
            new_label=f"b/{self.path}",
        )


@dataclass
class EditPlan:
    """The edits of one app plus the versions before → after (image references or values)."""

    edits: list[FileEdit] = field(default_factory=list)
    versions_before: list[str] = field(default_factory=list)
    versions_after: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(e.changed for e in self.edits)

    @property
    def diff(self) -> str:
        return "".join(e.diff for e in self.edits if e.changed)

    @property
    def version_before(self) -> str:
        return ", ".join(_short(v) for v in self.versions_before)

    @property
    def version_after(self) -> str:
        return ", ".join(_short(v) for v in self.versions_after)


def _short(ref: str) -> str:
    image = ImageRef.parse(ref) if ("/" in ref or ":" in ref or "@" in ref) else None
    return image.version if image and image.version else ref


@dataclass(frozen=True)
class SourceState:
    """What the source environment runs: Argo CD's revision and images, and a file reader at it."""

    revision: str
    images: tuple[str, ...]
    read: FileReader  # repository path → text at `revision` (None when missing)


# ---------------------------------------------------------------------------------------------
# Round-trip YAML


class _Doc:
    """A YAML document loaded round-trip, dumped back with the original indentation."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text
        try:
            mapping, ind, bsi, self.faithful = _style(text)
        except YAMLError as exc:
            raise StrategyError(f"{path}: not valid YAML ({_first_line(exc)})") from None
        self.yaml = _yaml(mapping, ind, bsi)
        self.data = self.yaml.load(text)
        self.scalar_edits: list[tuple[Any, Any, str]] = []

    def _dump(self, data: Any) -> str:
        out = io.StringIO()
        self.yaml.dump(data, out)
        return out.getvalue()

    def set_scalar(self, node: CommentedMap, key: str, value: str) -> None:
        """Set node[key] keeping its quoting style; remember the spot for the line-patch fallback."""
        old = node.get(key)
        if old is not None and str(old) == value:
            return
        node[key] = _like(old, value)
        self.scalar_edits.append((node, key, value))

    def render(self) -> str:
        if self.faithful:
            return self._dump(self.data)
        return self._line_patch()

    def _line_patch(self) -> str:
        """Replace just the edited scalars in the original text (file ruamel would reformat)."""
        lines = self.text.splitlines(keepends=True)
        for node, key, value in self.scalar_edits:
            try:
                line_no, col = node.lc.value(key)
            except (KeyError, AttributeError, TypeError):
                raise StrategyError(
                    f"{self.path}: cannot add {key!r} without reformatting the file"
                ) from None
            line = lines[line_no]
            lines[line_no] = line[:col] + _replace_scalar_token(line[col:], value)
        return "".join(lines)


def _yaml(mapping: int, sequence: int, offset: int) -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=mapping, sequence=sequence, offset=offset)
    return y


@functools.lru_cache(maxsize=512)
def _style(text: str) -> tuple[int, int, int, bool]:
    """The indentation that dumps `text` back unchanged: (mapping, sequence, offset, faithful).

    Found by loading and dumping the text up to four times: cached by content, because a
    preview plans the same overlay files again at every commit of the changelog it walks, and the
    push plans them once more. Not faithful (no indentation round-trips): the first one, and edits
    are patched into the original lines instead.
    """
    _, ind, bsi = load_yaml_guess_indent(text)
    ind, bsi = ind or 2, bsi or 0
    for mapping in dict.fromkeys((2, ind, 4)):
        y = _yaml(mapping, ind, bsi)
        out = io.StringIO()
        y.dump(y.load(text), out)
        if out.getvalue() == text:
            return mapping, ind, bsi, True
    return 2, ind, bsi, False


def _like(old: Any, value: str) -> Any:
    """Return `value` typed/quoted like `old`, quoting anything YAML would read as non-string."""
    if isinstance(old, str) and type(old) is not str:
        return type(old)(value)  # keeps '…' / "…" styles
    if _needs_quotes(value):
        return DoubleQuotedScalarString(value)
    return value


def _needs_quotes(value: str) -> bool:
    try:
        loaded = YAML(typ="safe").load(value)
    except YAMLError:
        return True
    return not isinstance(loaded, str) or loaded != value


def _replace_scalar_token(rest: str, value: str) -> str:
    end_nl = "\n" if rest.endswith("\n") else ""
    body = rest[:-1] if end_nl else rest
    if body[:1] in ("'", '"'):
        quote = body[0]
        close = body.find(quote, 1)
        tail = body[close + 1 :] if close > 0 else ""
        escaped = value.replace(quote, "''") if quote == "'" else value.replace('"', '\\"')
        return f"{quote}{escaped}{quote}{tail}{end_nl}"
    match = re.search(r"\s+#", body)
    tail = body[match.start() :] if match else ""
    token = f'"{value}"' if _needs_quotes(value) else value
    return f"{token}{tail}{end_nl}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Strategies


def env_dir(environment: Environment, app: Application) -> str:
    try:
        return validate_repo_path(environment.app_path(app.name))
    except (InvalidRef, KeyError, IndexError, ValueError) as exc:
        raise StrategyError(f"bad path pattern for {environment.name}: {exc}") from None


def _option_path(base: str, rel: Any) -> str:
    if not isinstance(rel, str) or not rel:
        raise StrategyError(f"strategy option path must be a non-empty string, got {rel!r}")
    joined = posixpath.normpath(posixpath.join(base, rel))
    if joined.startswith("../") or joined == ".." or not joined.startswith(base.rstrip("/") + "/"):
        raise StrategyError(f"strategy path {rel!r} leaves {base}")
    try:
        return validate_repo_path(joined)
    except InvalidRef as exc:
        raise StrategyError(str(exc)) from None


def _guarded(read: FileReader) -> FileReader:
    def guarded(path: str) -> str | None:
        try:
            return read(path)
        except UnsafeRepositoryContent as exc:
            raise StrategyError(f"the repository content is refused: {exc}") from None

    return guarded


def plan_edits(
    *,
    app: Application,
    source_env: Environment,
    target_env: Environment,
    source: SourceState,
    read_target: FileReader,
) -> EditPlan:
    """Compute the edits that make the target reference exactly what the source runs.

    A file the repository holds in a form the portal refuses (through a symlink or submodule, too
    big) is a StrategyError naming it, never followed.
    """
    source = SourceState(source.revision, source.images, _guarded(source.read))
    read_target = _guarded(read_target)
    strategy = app.strategy or "kustomize-images"
    options = app.strategy_options if isinstance(app.strategy_options, dict) else {}
    if strategy == "kustomize-images":
        return _kustomize_images(app, source_env, target_env, source, read_target, options)
    if strategy == "helm-values":
        return _helm_values(app, source_env, target_env, source, read_target, options)
    if strategy == "copy-paths":
        return _copy_paths(app, source_env, target_env, source, read_target, options)
    raise StrategyError(f"unknown promotion strategy {strategy!r}")


def _kustomize_images(
    app: Application,
    source_env: Environment,
    target_env: Environment,
    source: SourceState,
    read_target: FileReader,
    options: dict[str, Any],
) -> EditPlan:
    filename = options.get("file", "kustomization.yaml")
    target_path = _option_path(env_dir(target_env, app), filename)
    text = read_target(target_path)
    if text is None:
        raise StrategyError(f"{target_path} does not exist on the target branch")
    doc = _Doc(target_path, text)
    entries = doc.data.get("images") if isinstance(doc.data, CommentedMap) else None
    if not isinstance(entries, CommentedSeq) or not entries:
        raise StrategyError(f"{target_path} has no images: list to edit")
    wanted = _source_images(app, source_env, source, filename)
    plan = EditPlan()
    matched = 0
    for entry in entries:
        if not isinstance(entry, CommentedMap) or not entry.get("name"):
            continue
        name = str(entry.get("newName") or entry["name"])
        ref = wanted.get(name) or wanted.get(str(entry["name"]))
        before = _entry_ref(entry)
        if ref is None:
            continue
        matched += 1
        plan.versions_before.append(str(before))
        if ref.digest:
            if "digest" in entry or "newTag" not in entry:
                doc.set_scalar(entry, "digest", ref.digest)
            else:
                _swap_key(doc, entry, "newTag", "digest", ref.digest)
        elif ref.tag:
            if "newTag" in entry or "digest" not in entry:
                doc.set_scalar(entry, "newTag", ref.tag)
            else:
                _swap_key(doc, entry, "digest", "newTag", ref.tag)
        plan.versions_after.append(str(_entry_ref(entry)))
    if not matched:
        raise StrategyError(
            f"none of the images in {target_path} is run by {source_env.name} "
            f"(it runs {', '.join(str(r) for r in wanted.values()) or 'nothing known'})"
        )
    plan.edits.append(FileEdit(target_path, text, doc.render()))
    return plan


def _swap_key(doc: _Doc, entry: CommentedMap, old: str, new: str, value: str) -> None:
    if not doc.faithful:
        raise StrategyError(f"{doc.path}: cannot replace {old} by {new} without reformatting the file")
    position = list(entry.keys()).index(old)
    del entry[old]
    entry.insert(position, new, _like(None, value))


def _entry_ref(entry: CommentedMap) -> ImageRef:
    return ImageRef(
        name=str(entry.get("newName") or entry.get("name")),
        tag=str(entry.get("newTag") or ""),
        digest=str(entry.get("digest") or ""),
    )


def _source_images(
    app: Application, source_env: Environment, source: SourceState, filename: str
) -> dict[str, ImageRef]:
    """Images the source runs: Argo CD's report first, else its overlay at the synced revision."""
    wanted: dict[str, ImageRef] = {}
    for raw in source.images:
        ref = ImageRef.parse(raw)
        if ref.version:
            wanted[ref.name] = ref
    if wanted:
        return wanted
    path = _option_path(env_dir(source_env, app), filename)
    text = source.read(path)
    if text is None:
        return wanted
    try:
        kustomization = read_kustomization(text)
    except KustomizationError as exc:
        raise StrategyError(f"{path}: {exc}") from None
    for image in kustomization.images:
        ref = ImageRef(image.image, image.new_tag, image.digest)
        wanted[image.name] = ref
        wanted[ref.name] = ref
    return wanted


def _get_path(data: Any, dotted: str) -> tuple[Any, str] | None:
    """Return (parent mapping, last key) of a dotted path, or None when missing."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if not isinstance(node, dict) or keys[-1] not in node:
        return None
    return node, keys[-1]


def _helm_values(
    app: Application,
    source_env: Environment,
    target_env: Environment,
    source: SourceState,
    read_target: FileReader,
    options: dict[str, Any],
) -> EditPlan:
    filename = options.get("file", "values.yaml")
    paths = options.get("paths") or ["image.tag"]
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise StrategyError("helm-values needs strategy_options.paths: a list of dotted YAML paths")
    src_path = _option_path(env_dir(source_env, app), filename)
    dst_path = _option_path(env_dir(target_env, app), filename)
    src_text, dst_text = source.read(src_path), read_target(dst_path)
    if src_text is None:
        raise StrategyError(f"{src_path} does not exist at the source's revision {source.revision[:12]}")
    if dst_text is None:
        raise StrategyError(f"{dst_path} does not exist on the target branch")
    src = _Doc(src_path, src_text)
    dst = _Doc(dst_path, dst_text)
    plan = EditPlan()
    for dotted in paths:
        got, put = _get_path(src.data, dotted), _get_path(dst.data, dotted)
        if got is None:
            raise StrategyError(f"{src_path} has no value at {dotted}")
        if put is None:
            raise StrategyError(f"{dst_path} has no value at {dotted} (the portal never adds keys)")
        value = got[0][got[1]]
        if isinstance(value, dict | list):
            raise StrategyError(f"{dotted} is not a scalar value")
        plan.versions_before.append(f"{dotted}={put[0][put[1]]}")
        dst.set_scalar(put[0], put[1], str(value))
        plan.versions_after.append(f"{dotted}={value}")
    plan.edits.append(FileEdit(dst_path, dst_text, dst.render()))
    return plan


def _copy_paths(
    app: Application,
    source_env: Environment,
    target_env: Environment,
    source: SourceState,
    read_target: FileReader,
    options: dict[str, Any],
) -> EditPlan:
    paths = options.get("paths")
    if not isinstance(paths, list) or not paths:
        raise StrategyError(
            "copy-paths needs strategy_options.paths: files relative to the environment directory"
        )
    plan = EditPlan()
    src_dir, dst_dir = env_dir(source_env, app), env_dir(target_env, app)
    for rel in paths:
        src_path, dst_path = _option_path(src_dir, rel), _option_path(dst_dir, rel)
        content = source.read(src_path)
        if content is None:
            raise StrategyError(f"{src_path} does not exist at the source's revision {source.revision[:12]}")
        before = read_target(dst_path)
        plan.edits.append(FileEdit(dst_path, before, content))
        plan.versions_before.append(f"{rel}@{'absent' if before is None else 'target'}")
        plan.versions_after.append(f"{rel}@{source.revision[:12]}")
    return plan


def apply_plan(edits: Sequence[FileEdit], write: Callable[[str, str], None]) -> int:
    """Write the changed files through `write(path, text)`; return how many changed."""
    count = 0
    for edit in edits:
        if edit.changed:
            write(edit.path, edit.after)
            count += 1
    return count
