"""The matrix's cells as HTML built in Python, once per cell (10,000 apps: no nested template tags).

The markup is what templates/inventory/matrix.html wrote with template tags, escaped the same way.
"""

from __future__ import annotations

from urllib.parse import quote

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from core.templatetags.portal import sha, when
from inventory.matrix import Cell

register = template.Library()


def _q(value: str) -> str:
    return escape(quote(value, safe="/"))


def _cell_html(cell: Cell, *, app: str, point_in_time: bool, promote_url: str, rollback_url: str) -> str:
    parts = [
        f'<div class="cell-item{" stale" if cell.stale else ""}" data-argo-app="{escape(cell.argo_name)}">',
        f'<div class="line">{sha(cell.revision, url=cell.commit_url)}',
        f' <span class="version" title="{escape(cell.full_version)}">{escape(cell.version)}</span></div>',
    ]
    if cell.argo_revision:
        revision = escape(cell.argo_revision)
        parts.append(
            '<div class="line muted" data-argo-revision>Argo CD synced '
            f'<span class="sha" title="{revision}">{escape(cell.argo_revision[:8])}</span></div>'
        )
    if not point_in_time:
        parts.append(
            f'<div class="line"><span class="badge badge-{escape(cell.sync_badge)}">{escape(cell.sync_status)}</span>'
            f' <span class="badge badge-{escape(cell.health_badge)}">{escape(cell.health_status)}</span>'
            + (' <span class="badge badge-idle">stale</span>' if cell.stale else "")
            + "</div>"
        )
    if cell.deployed_at:
        parts.append(f'<div class="line muted">{when(cell.deployed_at, "ago")}</div>')
    if cell.behind_note:
        parts.append(f'<div class="behind">{escape(cell.behind_note)}</div>')
    if not point_in_time and (cell.can_promote or cell.can_rollback):
        parts.append('<div class="actions">')
        if promote_url and cell.can_promote:
            parts.append(
                f'<a class="button small" href="{escape(promote_url)}?app={_q(app)}&amp;from={_q(cell.env_name)}'
                f'&amp;to={_q(cell.promote_to)}">Promote to {escape(cell.promote_to)}</a>'
            )
        if rollback_url and cell.can_rollback:
            parts.append(
                f' <a class="button small" href="{escape(rollback_url)}?app={_q(app)}&amp;env={_q(cell.env_name)}">'
                "Roll back</a>"
            )
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


@register.simple_tag
def matrix_slot(
    slot: list[Cell], app: str, point_in_time: bool, promote_url: str, rollback_url: str
) -> SafeString:
    """One table cell of the matrix: its Argo CD apps (or a dash), built once."""
    if slot:
        first = slot[0]
        label = escape(first.env_name) + (f" · {escape(first.cluster)}" if first.cluster else "")
    else:
        label = ""
    inner = "".join(
        _cell_html(cell, app=app, point_in_time=point_in_time, promote_url=promote_url, rollback_url=rollback_url)
        for cell in slot
    ) or '<span class="muted">—</span>'  # fmt: skip
    return mark_safe(f'<td class="cell" data-label="{label}">{inner}</td>')  # noqa: S308 - every value escaped above
