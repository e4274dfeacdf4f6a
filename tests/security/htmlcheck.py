"""Parse a page and list what a strict Content Security Policy would block or what looks injected."""

from __future__ import annotations

from html.parser import HTMLParser


class _Scanner(HTMLParser):
    def __init__(self, nonce: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.nonce = nonce
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...> inline event handler")
            if name == "style":
                self.problems.append(f"<{tag} style=...> inline style")
            if name in ("href", "src", "action", "formaction") and (value or "").strip().lower().startswith(
                ("javascript:", "data:text/html")
            ):
                self.problems.append(f"<{tag} {name}={value!r}> script URL")
        if tag == "style":
            self.problems.append("<style> block")
        if tag == "script":
            self._in_script = True
            if not attributes.get("src"):
                self.problems.append("inline <script> without src")
            if self.nonce is not None and attributes.get("nonce") != self.nonce:
                self.problems.append(f"<script src={attributes.get('src')!r}> without the response's nonce")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append("inline script content")


def inline_code_problems(html: str, *, nonce: str | None = None) -> list[str]:
    """Return every inline script, inline style, event handler or script URL in the page."""
    scanner = _Scanner(nonce)
    scanner.feed(html)
    scanner.close()
    return scanner.problems


def csp_nonce(header: str) -> str | None:
    for directive in header.split(";"):
        parts = directive.split()
        if parts and parts[0] == "script-src":
            for source in parts[1:]:
                if source.startswith("'nonce-"):
                    return source[len("'nonce-") : -1]
    return None
