"""Query-string values for list filters: one cleaning rule for every page.

Control characters (NUL included) can match nothing the portal stores and PostgreSQL refuses NUL
in text, so they are dropped before a value reaches a query; values are cut at `limit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_PAGE = 10_000


def clean_text(value: Any, *, limit: int = 200) -> str:
    """Return `value` as one stripped line without control characters, at most `limit` long."""
    text = "".join(ch for ch in str(value or "") if ch.isprintable() or ch == " ")
    return text.strip()[:limit]


def query_text(params: Mapping[str, Any], name: str, *, limit: int = 200) -> str:
    """Return the cleaned value of one query parameter ("" when absent)."""
    return clean_text(params.get(name), limit=limit)


def query_page(params: Mapping[str, Any], name: str = "page") -> int:
    """Return a page number between 1 and MAX_PAGE (anything else is page 1)."""
    try:
        page = int(str(params.get(name) or 1))
    except ValueError:
        return 1
    return page if 1 <= page <= MAX_PAGE else 1
