"""The matrix's rows as HTML built in Python, once per page (10,000 apps: no nested template tags).

The markup is what templates/inventory/matrix.html wrote with template tags, escaped the same way
(html.escape is what django.utils.html.escape calls, without its lazy-string wrapper per value).
Within one page many cells repeat a commit, a deployment time or a label (an app's clusters, apps
released together): those fragments are built once per page, not once per cell.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from urllib.parse import quote

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from core.templatetags.portal import sha_html, time_html
from inventory.matrix import Cell, Matrix

register = template.Library()


def _q(value: str) -> str:
    return escape(quote(value, safe="/"))


class _PageHtml:
    """Builds one page's rows; memoises the fragments cells share (same input, same markup)."""

    def __init__(self, *, now: datetime, point_in_time: bool, promote_url: str, rollback_url: str) -> None:
        self.now = now
        self.tz = timezone.get_current_timezone()
        self.point_in_time = point_in_time
        self.promote_url = escape(promote_url)
        self.rollback_url = escape(rollback_url)
        self._times: dict[datetime, str] = {}
        self._shas: dict[tuple[str, str], str] = {}
        self._text: dict[str, str] = {}

    def text(self, value: str) -> str:
        html = self._text.get(value)
        if html is None:
            html = self._text[value] = escape(value)
        return html

    def time(self, value: datetime) -> str:
        html = self._times.get(value)
        if html is None:
            html = self._times[value] = time_html(value, ago=True, now=self.now, tz=self.tz)
        return html

    def sha(self, revision: str, url: str) -> str:
        key = (revision, url)
        html = self._shas.get(key)
        if html is None:
            html = self._shas[key] = sha_html(revision, url=url)
        return html

    def cell(self, cell: Cell, app: str) -> str:
        t = self.text
        parts = [
            f'<div class="cell-item{" stale" if cell.stale else ""}" data-argo-app="{t(cell.argo_name)}">',
            f"<div>{self.sha(cell.revision, cell.commit_url)}",
            f' <span class="version" title="{t(cell.full_version)}">{t(cell.version)}</span></div>',
        ]
        if cell.argo_revision:
            parts.append(
                '<div class="muted" data-argo-revision>Argo CD synced '
                f'<span class="sha" title="{t(cell.argo_revision)}">{t(cell.argo_revision[:8])}</span></div>'
            )
        if not self.point_in_time:
            parts.append(
                f'<div><span class="badge badge-{t(cell.sync_badge)}">{t(cell.sync_status)}</span>'
                f' <span class="badge badge-{t(cell.health_badge)}">{t(cell.health_status)}</span>'
                + (' <span class="badge badge-idle">stale</span>' if cell.stale else "")
                + "</div>"
            )
        if cell.deployed_at:
            parts.append(f'<div class="muted">{self.time(cell.deployed_at)}</div>')
        if cell.behind:
            parts.append(f'<div class="behind">{t(cell.behind_note)}</div>')
        if not self.point_in_time and (cell.can_promote or cell.can_rollback):
            parts.append('<div class="actions">')
            if self.promote_url and cell.can_promote:
                parts.append(
                    f'<a class="button small" href="{self.promote_url}?app={_q(app)}&amp;from={_q(cell.env_name)}'
                    f'&amp;to={_q(cell.promote_to)}">Promote to {t(cell.promote_to)}</a>'
                )
            if self.rollback_url and cell.can_rollback:
                parts.append(
                    f' <a class="button small" href="{self.rollback_url}?app={_q(app)}&amp;env={_q(cell.env_name)}">'
                    "Roll back</a>"
                )
            parts.append("</div>")
        parts.append("</div>")
        return "".join(parts)

    def slot(self, slot: list[Cell], app: str) -> str:
        """One table cell: its Argo CD apps (or a dash), labelled for the small-screen cards."""
        if not slot:
            return '<td class="cell" data-label=""><span class="muted">—</span></td>'
        first = slot[0]
        label = self.text(first.env_name) + (f" · {self.text(first.cluster)}" if first.cluster else "")
        return f'<td class="cell" data-label="{label}">{"".join(self.cell(c, app) for c in slot)}</td>'


@register.simple_tag
def matrix_rows(matrix: Matrix, promote_url: str, rollback_url: str) -> SafeString:
    """The table body's rows: the app's name and project, then one cell per column."""
    page = _PageHtml(
        now=matrix.now, point_in_time=matrix.point_in_time, promote_url=promote_url, rollback_url=rollback_url
    )
    out = []
    for row in matrix.rows:
        app = row.application
        out.append(
            f'<tr><th scope="row"><a href="{escape(reverse("inventory:app", args=[app.name]))}">{escape(app.name)}</a>'
            f'<br><span class="muted">{escape(app.project)}</span></th>'
            + "".join(page.slot(slot, app.name) for slot in row.slots)
            + "</tr>\n"
        )
    return mark_safe("".join(out))  # noqa: S308 - every value escaped above
