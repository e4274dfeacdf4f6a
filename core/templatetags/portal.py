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
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

from core.timestamps import timestamp_exact, timestamp_text

register = template.Library()


@register.filter(is_safe=True)
def when(value: Any, mode: str = "") -> SafeString | str:
    """Render a datetime as ``<time>`` in the portal's format; "" for none (``|default`` applies)."""
    if not isinstance(value, datetime):
        return "" if value is None else value
    exact = timestamp_exact(value)
    # Digits, dashes and the zone name only: nothing to escape (the matrix renders hundreds of these).
    html = f'<time datetime="{exact}" title="{exact}">{timestamp_text(value)}</time>'
    if mode == "ago":
        now = timezone.now()
        ago = (
            "just now" if abs((now - value).total_seconds()) < 60 else f"{timesince(value, now, depth=1)} ago"
        )
        html += f' <span class="muted ago">({ago})</span>'
    return mark_safe(html)  # noqa: S308 - built from formatted datetimes only


@register.simple_tag
def sha(value: Any, url: str = "", repository: Any = None, length: int = 8) -> SafeString:
    """Render a SHA: short text (linked when a URL is known) and a button copying the full SHA."""
    full = escape(str(value or ""))
    if not full:
        return mark_safe("—")
    if not url and repository is not None and len(full) >= 7:
        url = repository.commit_url(str(value))
    short = full[:length]
    text = (
        f'<a class="sha" href="{escape(url)}" title="{full}">{short}</a>'
        if url
        else f'<code class="sha" title="{full}">{short}</code>'
    )
    button = f'<button type="button" class="copy-button" data-copy="{full}" aria-label="Copy {short}">Copy</button>'
    return mark_safe(f'<span class="sha-ref">{text}{button}</span>')  # noqa: S308 - every part escaped above
