"""Template filters and tags every page uses (registered as builtins: no ``{% load %}`` needed).

- ``{{ value|when }}``: a timestamp in the one format with its zone, the exact time on hover
  (``<time datetime=… title=…>``); ``{{ value|when:"ago" }}`` adds how long ago as secondary text.
- ``{% sha value %}``: a commit SHA, short, linked (``url=`` or ``repository=`` with ``commit_url``),
  with a copy button (static/js/portal.js copies ``data-copy``; no inline script, CSP-safe).
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from html import escape as html_escape
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
    return mark_safe(time_html(value, ago=mode == "ago"))  # noqa: S308 - built from formatted datetimes only


def time_html(
    value: datetime, *, ago: bool = False, now: datetime | None = None, tz: tzinfo | None = None
) -> str:
    """The HTML of ``when``; a page rendering hundreds passes one `now` and the current zone `tz`."""
    exact = timestamp_exact(value, tz)
    # Digits, dashes and the zone name only: nothing to escape (the matrix renders hundreds of these).
    html = f'<time datetime="{exact}" title="{exact}">{timestamp_text(value, tz)}</time>'
    if ago:
        now = now or timezone.now()
        text = (
            "just now" if abs((now - value).total_seconds()) < 60 else f"{timesince(value, now, depth=1)} ago"
        )
        html += f' <span class="muted ago">({text})</span>'
    return html


@register.simple_tag
def sha(value: Any, url: str = "", repository: Any = None, length: int = 8) -> SafeString:
    """Render a SHA: short text (linked when a URL is known) and a button copying the full SHA."""
    text = str(value or "")
    if text and not url and repository is not None and len(escape(text)) >= 7:
        url = repository.commit_url(text)
    return mark_safe(sha_html(text, url=url, length=length))  # noqa: S308 - every part escaped in sha_html


def sha_html(value: str, *, url: str = "", length: int = 8) -> str:
    """The HTML of ``{% sha %}`` (a string: the matrix builds hundreds without the template engine)."""
    full = html_escape(value)
    if not full:
        return "—"
    short = full[:length]
    text = (
        f'<a class="sha" href="{html_escape(url)}" title="{full}">{short}</a>'
        if url
        else f'<code class="sha" title="{full}">{short}</code>'
    )
    button = f'<button type="button" class="copy-button" data-copy="{full}" aria-label="Copy {short}">Copy</button>'
    return f'<span class="sha-ref">{text}{button}</span>'
