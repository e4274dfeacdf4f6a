"""The matrix's cells as HTML built in Python, once per cell (10,000 apps: no nested template tags).

The markup is what templates/inventory/matrix.html wrote with template tags, escaped the same way.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince
from django.utils.timezone import localtime

from inventory.matrix import Cell

register = template.Library()


def _q(value: str) -> str:
    return escape(quote(value, safe="/"))


def _cell_html(
    cell: Cell, *, app: str, point_in_time: bool, now: datetime, promote_url: str, rollback_url: str
) -> str:
    parts = [
        f'<div class="cell-item{" stale" if cell.stale else ""}" data-argo-app="{escape(cell.argo_name)}">',
        '<div class="line">',
        f'<a class="sha" href="{escape(cell.commit_url)}" title="{escape(cell.revision)}">{escape(cell.short_sha)}</a>'
        if cell.commit_url
        else f'<span class="sha">{escape(cell.short_sha or "—")}</span>',
        f' <span class="version" title="{escape(cell.full_version)}">{escape(cell.version)}</span>',
        "</div>",
    ]
    if not point_in_time:
        parts.append(
            f'<div class="line"><span class="badge badge-{escape(cell.sync_badge)}">{escape(cell.sync_status)}</span>'
            f' <span class="badge badge-{escape(cell.health_badge)}">{escape(cell.health_status)}</span>'
            + (' <span class="badge badge-idle">stale</span>' if cell.stale else "")
            + "</div>"
        )
    if cell.deployed_at:
        when = localtime(cell.deployed_at)  # as the template did (aware, current time zone)
        parts.append(
            f'<div class="line muted"><time datetime="{when.isoformat()}">'
            f"{escape(timesince(cell.deployed_at, now))} ago</time></div>"
        )
    if cell.behind is not None:
        plural = "" if cell.behind == 1 else "s"
        parts.append(
            f'<div class="behind">{cell.behind} commit{plural} behind {escape(cell.behind_env)}</div>'
        )
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
    slot: list[Cell], app: str, point_in_time: bool, now: datetime, promote_url: str, rollback_url: str
) -> SafeString:
    """One table cell of the matrix: its Argo CD apps (or a dash), built once."""
    if slot:
        first = slot[0]
        label = escape(first.env_name) + (f" · {escape(first.cluster)}" if first.cluster else "")
    else:
        label = ""
    inner = "".join(
        _cell_html(
            cell, app=app, point_in_time=point_in_time, now=now, promote_url=promote_url,
            rollback_url=rollback_url,
        )
        for cell in slot
    ) or '<span class="muted">—</span>'  # fmt: skip
    return mark_safe(f'<td class="cell" data-label="{label}">{inner}</td>')  # noqa: S308 - every value escaped above
