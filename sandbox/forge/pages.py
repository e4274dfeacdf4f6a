"""Minimal HTML at the `html_url`s the API hands out, so demo links lead somewhere: pull requests
(with GitHub's merge button) and commits (`/{owner}/{repo}/commit/{sha}`, GitHub's URL shape)."""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qs

from .admin import HUMAN
from .core import ForgeCore
from .payloads import RepoRef
from .pulls import pull_merge
from .routing import ApiError, Request, Response, Router
from .state import Pull

_STYLE = (
    "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:1.5rem auto;padding:0 1rem}"
    "pre{background:#f6f8fa;padding:.75rem;overflow-x:auto}"
    "button:focus,select:focus,input:focus,a:focus{outline:3px solid #0969da;outline-offset:2px}"
    ".error{border:2px solid #cf222e;padding:.5rem}"
    "@media (prefers-color-scheme: dark){body{background:#0d1117;color:#e6edf3}pre{background:#161b22}"
    "a{color:#58a6ff}}</style>"
)
_STATE_WORDS = {"success": "✓ success", "failure": "✗ failure", "error": "✗ error", "pending": "● pending"}


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>{_STYLE}</head>\n<body><main>\n{body}\n</main></body></html>\n"
    )
    return Response(status, html.encode(), {"Content-Type": "text/html; charset=utf-8"})


class Pages:
    def __init__(self, core: ForgeCore) -> None:
        self.core = core

    def register(self, router: Router) -> None:
        router.add("GET", "/{owner}/{repo}/pull/{number}", self.pull)
        router.add("POST", "/{owner}/{repo}/pull/{number}/merge", self.merge)
        router.add("GET", "/{owner}/{repo}/commit/{sha}", self.commit)
        router.add("GET", "/{owner}/{repo}/runs/{run_id}", self.run)

    # --- pull requests -----------------------------------------------------------------------
    def pull(self, req: Request, *, error: str = "", status: int = 200) -> Response:
        ref, bare = self.core.repo(req.params["owner"], req.params["repo"])
        item = self.core.pull(ref, req.params["number"])
        data = self.core.pull_payload(ref, bare, item)
        head = data["head"]["sha"]
        state = "merged" if data["merged"] else data["state"]
        labels = ", ".join(escape(label["name"]) for label in data["labels"]) or "none"
        reviews = (
            "".join(f"<li>{escape(r.user)}: {escape(r.state)}</li>" for r in item.reviews) or "<li>none</li>"
        )
        merged = ""
        if data["merged"]:
            merge_sha = data["merge_commit_sha"]
            merged = (
                f"<p>Merged by <strong>{escape(item.merged_by or '')}</strong> at {escape(item.merged_at or '')}"
                f' in <a href="{escape(ref.html)}/commit/{escape(merge_sha)}"><code>{escape(merge_sha[:12])}</code></a></p>'
            )
        body = f"""<h1>{escape(item.title)} <small>#{item.number}</small></h1>
{f'<p class="error" role="alert">{escape(error)}</p>' if error else ""}
<p>State: <strong>{escape(state)}</strong> · {escape(data["head"]["label"])} → {escape(data["base"]["label"])}
 · head <a href="{escape(ref.html)}/commit/{escape(head)}"><code>{escape(head[:12])}</code></a>
 · mergeable state: {escape(str(data["mergeable_state"]))}</p>
{merged}
<p>Opened by {escape(item.user)} at {escape(item.created_at)}</p>
<pre>{escape(item.body or "")}</pre>
<p>Labels: {labels}</p>
<h2>Checks</h2>{self._checks(ref, head)}
<h2>Reviews</h2><ul>{reviews}</ul>
{self._merge_form(ref, item, head) if data["state"] == "open" else ""}
<p><a href="{escape(data["url"])}/files">Changed files (JSON)</a></p>
"""
        return _page(f"{item.title} · #{item.number}", body, status)

    def _merge_form(self, ref: RepoRef, item: Pull, head: str) -> str:
        if item.draft:
            return "<p>This pull request is still a draft and cannot be merged.</p>"
        return f"""<h2>Merge</h2>
<form method="post" action="/{escape(ref.owner)}/{escape(ref.name)}/pull/{item.number}/merge">
<input type="hidden" name="sha" value="{escape(head)}">
<p><label for="merge-user">Merge as</label>
<input id="merge-user" name="user" value="{escape(HUMAN)}" autocomplete="username"></p>
<p><label for="merge-method">Merge method</label>
<select id="merge-method" name="merge_method">
<option value="merge">Create a merge commit</option>
<option value="squash">Squash and merge</option>
</select></p>
<p><button type="submit">Merge pull request</button></p>
</form>"""

    def merge(self, req: Request) -> Response:
        """The merge button: the same merge as the API's, by the user named in the form."""
        ref, bare = self.core.repo(req.params["owner"], req.params["repo"])
        item = self.core.pull(ref, req.params["number"])
        form = {k: v[-1] for k, v in parse_qs(req.body.decode(errors="replace")).items()}
        login = form.get("user", "").strip() or HUMAN
        data = {"merge_method": form.get("merge_method", "merge")}
        if form.get("sha"):
            data["sha"] = form["sha"]
        try:
            pull_merge(self.core, ref, bare, item, login, data)
        except ApiError as exc:
            return self.pull(req, error=exc.message, status=exc.status)
        return Response(303, b"", {"Location": f"{ref.html}/pull/{item.number}"})

    # --- commits -------------------------------------------------------------------------------
    def commit(self, req: Request) -> Response:
        ref, bare = self.core.repo(req.params["owner"], req.params["repo"])
        info = bare.commit(req.params["sha"])
        if info is None:
            return _page("Commit not found", "<h1>Commit not found</h1>", 404)
        subject, _, rest = info.message.partition("\n")
        parents = ", ".join(
            f'<a href="{escape(ref.html)}/commit/{escape(p)}"><code>{escape(p[:12])}</code></a>'
            for p in info.parents
        )
        files = []
        for change in bare.diff(info.parents[0] if info.parents else None, info.sha):
            patch = f"<pre>{escape(change.patch)}</pre>" if change.patch else ""
            files.append(
                f"<li><strong>{escape(change.filename)}</strong> ({escape(change.status)},"
                f" +{change.additions} &minus;{change.deletions}){patch}</li>"
            )
        body = f"""<h1>{escape(subject)}</h1>
<pre>{escape(rest.strip())}</pre>
<p>Commit <code>{escape(info.sha)}</code> in <a href="{escape(ref.html)}">{escape(ref.full_name)}</a></p>
<p>Authored by {escape(info.author.name)} &lt;{escape(info.author.email)}&gt; at {escape(info.author.date or "")};
 committed by {escape(info.committer.name)} at {escape(info.committer.date or "")}</p>
<p>Parents: {parents or "none"}</p>
<h2>Checks</h2>{self._checks(ref, info.sha)}
<h2>Files changed ({len(files)})</h2><ul>{"".join(files)}</ul>
"""
        return _page(f"{subject} · {info.sha[:7]}", body)

    def run(self, req: Request) -> Response:
        """A check run's page (its `html_url`): the run's state and output, linking its commit."""
        ref, _ = self.core.repo(req.params["owner"], req.params["repo"])
        runs = [r for r in self.core.repo_state(ref).check_runs if str(r.id) == req.params["run_id"]]
        if not runs:
            return _page("Check run not found", "<h1>Check run not found</h1>", 404)
        run = runs[0]
        state = _STATE_WORDS.get(run.conclusion or "pending", run.conclusion or run.status)
        body = f"""<h1>{escape(run.name)} <small>check run #{run.id}</small></h1>
<p>State: <strong>{escape(state)}</strong> ({escape(run.status)})</p>
<p>Commit <a href="{escape(ref.html)}/commit/{escape(run.head_sha)}"><code>{escape(run.head_sha[:12])}</code></a></p>
"""
        return _page(f"{run.name} · check run #{run.id}", body)

    def _checks(self, ref: RepoRef, sha: str) -> str:
        statuses = self.core.latest_statuses(ref, sha)
        runs = [r for r in self.core.repo_state(ref).check_runs if r.head_sha == sha]
        rows = [
            f"<li>{escape(s.context)}: {escape(_STATE_WORDS.get(s.state, s.state))}"
            f"{' — ' + escape(s.description) if s.description else ''}</li>"
            for s in statuses
        ]
        latest = {r.name: r for r in runs}  # later runs win
        rows += [
            f"<li>{escape(r.name)} (check run): {escape(_STATE_WORDS.get(r.conclusion or 'pending', r.conclusion or r.status))}</li>"
            for r in latest.values()
        ]
        return f"<ul>{''.join(rows)}</ul>" if rows else "<p>No checks reported.</p>"
