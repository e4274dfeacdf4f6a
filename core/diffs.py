"""The one unified diff: explicit labels, git's "no newline" marker, and line classes for pages."""

from __future__ import annotations

import difflib

NO_NEWLINE = "\\ No newline at end of file"


def diff_lines(old: str, new: str, *, old_label: str, new_label: str, context: int = 3) -> list[str]:
    """Return the unified diff of two texts as lines (no trailing newlines), as git prints it.

    The labels are the `---`/`+++` names (git style: "a/path" and "b/path", "/dev/null" for a
    file that does not exist on that side). Equal texts give no lines.
    """
    lines: list[str] = []
    for line in difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=old_label,
        tofile=new_label,
        n=context,
    ):
        if line.endswith("\n"):
            lines.append(line[:-1])
        else:
            # The last line of a text without a final newline: git marks it rather than hiding it.
            lines.extend((line, NO_NEWLINE))
    return lines


def diff_text(old: str, new: str, *, old_label: str, new_label: str, context: int = 3) -> str:
    """Return the unified diff as one text ending with a newline ("" when the texts are equal)."""
    lines = diff_lines(old, new, old_label=old_label, new_label=new_label, context=context)
    return "".join(f"{line}\n" for line in lines)


def classify_diff(text: str, *, limit: int = 5000) -> list[tuple[str, str]]:
    """Return (css class, line) pairs of a unified diff for the `diff` block of a page.

    Classes: "file" for the file header (`diff --git`, `index`, `---`, `+++`), "hunk" for `@@`
    lines, "add" and "del" for changed lines, "" for context. At most `limit` lines are returned.
    """
    rows: list[tuple[str, str]] = []
    for line in text.splitlines()[:limit]:
        if line.startswith(("+++ ", "--- ", "diff --git", "index ")) or line in ("+++", "---"):
            css = "file"
        elif line.startswith("@@"):
            css = "hunk"
        elif line.startswith("+"):
            css = "add"
        elif line.startswith("-"):
            css = "del"
        else:
            css = ""
        rows.append((css, line))
    return rows
