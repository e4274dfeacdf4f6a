"""Minimal read-only HTML at the `html_url`s the API hands out, so demo links lead somewhere."""

from __future__ import annotations

from html import escape

from .core import ForgeCore
from .routing import Request, Response, Router


class Pages:
    def __init__(self, core: ForgeCore) -> None:
        self.core = core

    def register(self, router: Router) -> None:
        router.add("GET", "/{owner}/{repo}/pull/{number}", self.pull)

    def pull(self, req: Request) -> Response:
        ref, bare = self.core.repo(req.params["owner"], req.params["repo"])
        item = self.core.pull(ref, req.params["number"])
        data = self.core.pull_payload(ref, bare, item)
        state = "merged" if data["merged"] else data["state"]
        labels = ", ".join(escape(label["name"]) for label in data["labels"]) or "none"
        reviews = (
            "".join(f"<li>{escape(r.user)}: {escape(r.state)}</li>" for r in item.reviews) or "<li>none</li>"
        )
        body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(item.title)} · #{item.number}</title></head>
<body>
<h1>{escape(item.title)} <small>#{item.number}</small></h1>
<p>State: <strong>{escape(state)}</strong> · {escape(data["head"]["label"])} → {escape(data["base"]["label"])}
 · head {escape(data["head"]["sha"][:12])} · mergeable state: {escape(str(data["mergeable_state"]))}</p>
<p>Opened by {escape(item.user)} at {escape(item.created_at)}</p>
<pre>{escape(item.body or "")}</pre>
<p>Labels: {labels}</p>
<h2>Reviews</h2><ul>{reviews}</ul>
<p><a href="{escape(data["url"])}/files">Changed files (JSON)</a></p>
</body></html>
"""
        return Response(200, body.encode(), {"Content-Type": "text/html; charset=utf-8"})
