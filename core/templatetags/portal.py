"""Template filters and tags every page uses (registered as builtins: no ``{% load %}`` needed).

- ``{{ value|when }}``: a timestamp in the one format with its zone, the exact time on hover
  (``<time datetime=… title=…>``); ``{{ value|when:"ago" }}`` adds how long ago as secondary text.
- ``{% sha value %}``: a commit SHA, short, linked (``url=`` or ``repository=`` with ``commit_url``),
  with a copy button (static/js/portal.js copies ``data-copy``; no inline script, CSP-safe).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

from core.timestamps import timestamp_exact, timestamp_text

register = template.Library()


@register.filter(is_safe=True)
def when(value: Any, mode: str = "") -> SafeString | str:
    """Render a datetime as ``<time>`` in the portal's format; "—" for none."""
    if not isinstance(value, datetime):
        return "" if value is None else value
    exact = timestamp_exact(value)
    html = format_html('<time datetime="{}" title="{}">{}</time>', exact, exact, timestamp_text(value))
    if mode == "ago":
        now = timezone.now()
        ago = (
            "just now" if abs((now - value).total_seconds()) < 60 else f"{timesince(value, now, depth=1)} ago"
        )
        html = format_html('{} <span class="muted ago">({})</span>', html, ago)
    return html


@register.simple_tag
def sha(value: Any, url: str = "", repository: Any = None, length: int = 8) -> SafeString:
    """Render a SHA: short text (linked when a URL is known) and a button copying the full SHA."""
    full = str(value or "")
    if not full:
        return mark_safe("—")
    if not url and repository is not None and len(full) >= 7:
        url = repository.commit_url(full)
    short = full[:length]
    text = (
        format_html('<a class="sha" href="{}" title="{}">{}</a>', url, full, short)
        if url
        else format_html('<code class="sha" title="{}">{}</code>', full, short)
    )
    button = format_html(
        '<button type="button" class="copy-button" data-copy="{}" aria-label="Copy {} to the clipboard"'
        ' title="Copy {}">Copy</button>',
        full,
        full,
        full,
    )
    return format_html('<span class="sha-ref">{}{}</span>', text, button)
