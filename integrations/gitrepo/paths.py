"""Path safety inside a commit's tree: no symlink or submodule component, no file over the cap."""

from __future__ import annotations

from integrations.gitrepo.command import _decode, _Runner
from integrations.gitrepo.errors import UnsafeRepositoryContent

_MODE_SYMLINK, _MODE_GITLINK, _MODE_TREE = "120000", "160000", "040000"


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _tree_modes(runner: _Runner, commit: str, path: str) -> dict[str, tuple[str, int | None]]:
    """Return {path: (mode, size)} for `path` and each of its leading directories in `commit`.

    One `ls-tree` without -r: it lists each named directory's entries, so a symlink or submodule
    standing where a directory is expected shows up under its own name.
    """
    out = runner.run_bytes("ls-tree", "-t", "-l", "-z", "--full-tree", commit, "--", *_prefixes(path))[1]
    wanted = set(_prefixes(path))
    entries: dict[str, tuple[str, int | None]] = {}
    for record in out.split(b"\x00"):
        meta, _, name = record.partition(b"\t")
        fields = meta.split()
        decoded = _decode(name)
        if len(fields) == 4 and decoded in wanted:
            size = fields[3]
            entries[decoded] = (_decode(fields[0]), int(size) if size.isdigit() else None)
    return entries


def _check_tree_path(runner: _Runner, commit: str, path: str, *, max_bytes: int) -> str | None:
    """Refuse a path through a symlink or submodule, or naming a file over the cap; return its mode.

    None means the path does not exist in `commit`.
    """
    entries = _tree_modes(runner, commit, path)
    for prefix in _prefixes(path):
        entry = entries.get(prefix)
        if entry is None:
            return None
        mode, size = entry
        if mode == _MODE_SYMLINK:
            raise UnsafeRepositoryContent(
                f"refusing {path!r}: {prefix!r} is a symbolic link in the repository"
            )
        if mode == _MODE_GITLINK:
            raise UnsafeRepositoryContent(f"refusing {path!r}: {prefix!r} is a submodule")
        if prefix != path and mode != _MODE_TREE:
            raise UnsafeRepositoryContent(f"refusing {path!r}: {prefix!r} is a file, not a directory")
        if prefix == path and size is not None and size > max_bytes:
            raise UnsafeRepositoryContent(
                f"refusing {path!r}: {size} bytes is over the portal's limit of {max_bytes} bytes"
            )
    return entries[path][0]
