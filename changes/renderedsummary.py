"""The rendered diff as a pull request body section: counts per kind, the objects, a link; size-capped.

Forges cap a PR body (`BODY_LIMIT` of each forge client: GitHub 65,536 characters, Gitea assumed
alike, GitLab 1,000,000): `pr_body_limit` leaves a margin under the forge's cap, the section never
exceeds its budget and says "truncated" when objects were left out. No unified diff and no Secret
value goes into a body: the portal's page has the diffs (Secrets: key names only, there too).
"""

from __future__ import annotations

from collections.abc import Sequence

from changes.rendered import RenderedChange
from integrations.forges import CLIENTS

# Conservative for the smallest forge cap (GitHub's 65,536), leaving room for the rest of the body.
SUMMARY_LIMIT = 30_000
TRUNCATED = "… truncated: the full rendered diff is on the portal page"


def md_escape(text: str) -> str:
    """Neutralise Markdown/HTML in text of a PR body that comes from manifests, commits or users."""
    return (
        text.replace("\\", "\\\\")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("`", "'")
        .replace("\n", " ")
    )


def _change_lines(change: RenderedChange) -> list[str]:
    head = f"**{md_escape(change.app)}** → {md_escape(change.destination)}"
    if change.error:
        return [f"{head}: ❌ Argo CD cannot render it: {md_escape(change.error)[:1000]}"]
    if change.pending or change.diff is None:
        return [f"{head}: rendered after the branch is pushed"]
    diff = change.diff
    if diff.empty:
        return [f"{head}: no object changes ({diff.unchanged} object(s) unchanged)"]
    counts = ", ".join(
        f"{k.kind} "
        + "/".join(f"{sign}{n}" for sign, n in (("+", k.added), ("-", k.removed), ("~", k.changed)) if n)
        for k in diff.by_kind
    )
    lines = [
        f"{head} (`{change.before_revision[:12]}` → `{change.after_revision[:12]}`): "
        f"{len(diff.added)} added, {len(diff.removed)} removed, {len(diff.changed)} changed — {counts}"
    ]
    for c in diff.changes:
        extra = f" (keys: {md_escape(', '.join(c.secret_keys))})" if c.secret_keys else ""
        lines.append(f"- {c.change}: `{md_escape(str(c.id))}`{extra}")
    if change.waves:
        lines.extend(f"- ⚠️ {md_escape(text)}" for text in change.waves.callouts)
    return lines


def rendered_summary_markdown(
    changes: Sequence[RenderedChange], *, link: str, limit: int = SUMMARY_LIMIT
) -> str:
    """Return the "Rendered by Argo CD" section of a PR body, at most `limit` characters."""
    header = ["### Rendered by Argo CD", "", f"Object diff, sync waves and hooks: {link}", ""]
    if not changes:
        return "\n".join([*header, "No Argo CD application to render."])
    out = list(header)
    size = sum(len(line) + 1 for line in out)
    budget = limit - len(TRUNCATED) - 2
    for change in changes:
        for line in _change_lines(change):
            if size + len(line) + 1 > budget:
                return "\n".join([*out, TRUNCATED])
            out.append(line)
            size += len(line) + 1
    return "\n".join(out)


# The whole body on GitHub (the default): under its 65,536 characters with room to spare.
PR_BODY_LIMIT = 60_000
# Left free under a forge's cap: what the forge adds or counts differently (escapes, line ends).
BODY_MARGIN = 0.08


def pr_body_limit(forge_kind: str) -> int:
    """Return the longest PR body the portal sends to a forge of `forge_kind` (its cap, less a margin)."""
    client = CLIENTS.get(forge_kind)
    if client is None:
        return PR_BODY_LIMIT
    return int(client.BODY_LIMIT * (1 - BODY_MARGIN))


def summary_limit(forge_kind: str) -> int:
    """Return the rendered section's budget on a forge: half its body (`body_cap` keeps the other half)."""
    return pr_body_limit(forge_kind) // 2


BODY_TRUNCATED = "… truncated (the pull request body has a size limit): see the portal page"


def body_cap(main: str, section: str, *, limit: int = PR_BODY_LIMIT) -> str:
    """Join a PR body and its rendered section within `limit`; the main part is cut first, at a line."""
    section = section[: max(0, limit // 2)]
    room = limit - len(section) - 2
    if len(main) > room:
        cut = main[: max(0, room - len(BODY_TRUNCATED) - 1)]
        main = (cut.rsplit("\n", 1)[0] if "\n" in cut else cut) + "\n" + BODY_TRUNCATED
    return f"{main}\n\n{section}"
