"""Pull requests, reviews, review requests, labels and comments (the issues API shares numbers)."""

from __future__ import annotations

from typing import Any

from . import payloads
from .core import ForgeCore
from .gitstore import BareRepo
from .payloads import RepoRef
from .routing import ApiError, Request, Response, Router, paginate, validation_failed
from .state import Comment, Label, Pull, Review, now_iso

PULLS_DOC = "/pulls/pulls"
MERGE_DOC = "/pulls/pulls#merge-a-pull-request"
REVIEW_EVENTS = {"APPROVE": "APPROVED", "COMMENT": "COMMENTED", "REQUEST_CHANGES": "CHANGES_REQUESTED"}
LABEL_COLORS = ["0e8a16", "1d76db", "5319e7", "b60205", "d93f0b", "fbca04", "c5def5", "bfdadc"]


def parse_head(ref: RepoRef, head: str) -> str:
    """Accept "B" or "OWNER:B"; forks are not emulated, so another owner is an invalid head."""
    owner, sep, branch = head.partition(":")
    if not sep:
        return head
    if owner != ref.owner:
        raise validation_failed(
            {"resource": "PullRequest", "field": "head", "code": "invalid"}, doc=PULLS_DOC
        )
    return branch


# --- services (also used by the admin endpoints) ----------------------------------------------
def pull_create(core: ForgeCore, ref: RepoRef, bare: BareRepo, data: dict[str, Any], login: str) -> Pull:
    title, head_raw, base = data.get("title"), data.get("head"), data.get("base")
    missing = [name for name, value in (("head", head_raw), ("base", base)) if not value]
    if missing:
        raise validation_failed(
            *({"resource": "PullRequest", "field": name, "code": "missing_field"} for name in missing),
            doc=PULLS_DOC,
        )
    if not title:
        raise validation_failed(
            {"resource": "PullRequest", "field": "title", "code": "missing_field"}, doc=PULLS_DOC
        )
    head = parse_head(ref, str(head_raw))
    with core.repo_lock(ref.full_name):
        head_sha, base_sha = bare.branch_sha(head), bare.branch_sha(str(base))
        invalid = [name for name, sha in (("head", head_sha), ("base", base_sha)) if sha is None]
        if invalid:
            raise validation_failed(
                *({"resource": "PullRequest", "field": name, "code": "invalid"} for name in invalid),
                doc=PULLS_DOC,
            )
        assert head_sha and base_sha  # narrowed above
        rstate = core.repo_state(ref)
        for other in core.pulls(ref):
            if other.state == "open" and other.head_ref == head and other.base_ref == base:
                raise validation_failed(
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"A pull request already exists for {ref.owner}:{head}.",
                    },
                    doc=PULLS_DOC,
                )
        if bare.count([head_sha, f"^{base_sha}"]) == 0:
            raise validation_failed(
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": f"No commits between {base} and {head}",
                },
                doc=PULLS_DOC,
            )
        with core.state.lock:
            item = Pull(
                number=rstate.next_number,
                id=core.state.new_id(),
                title=str(title),
                body=data.get("body"),
                user=login,
                head_ref=head,
                base_ref=str(base),
                head_sha=head_sha,
                base_sha=base_sha,
                draft=bool(data.get("draft", False)),
            )
            rstate.next_number += 1
            rstate.pulls[item.number] = item
        core.state.save()
    core.emit_pull(ref, bare, item, "opened", login)
    return item


def pull_merge(
    core: ForgeCore, ref: RepoRef, bare: BareRepo, item: Pull, login: str, data: dict[str, Any]
) -> dict[str, Any]:
    """Merge for real: merge-tree + commit-tree + compare-and-swap update-ref on the base branch."""
    method = data.get("merge_method", "merge")
    if method == "rebase":
        raise ApiError(405, "Rebase merges are not allowed on this repository.", doc=MERGE_DOC)
    if method not in ("merge", "squash"):
        raise validation_failed(
            {"resource": "PullRequest", "field": "merge_method", "code": "invalid"}, doc=MERGE_DOC
        )
    with core.repo_lock(ref.full_name):
        if item.state != "open":
            raise ApiError(405, "Pull Request is not mergeable", doc=MERGE_DOC)
        if item.draft:
            raise ApiError(405, "Pull Request is still a draft", doc=MERGE_DOC)
        for _attempt in range(3):  # the base may move under us via `git push`; recompute then
            head, base = core.live_shas(bare, item)
            if data.get("sha") and data["sha"] != head:
                raise ApiError(
                    409, "Head branch was modified. Review and try the merge again.", doc=MERGE_DOC
                )
            blockers = core.merge_blockers(ref, item, head)
            if blockers:
                raise ApiError(405, blockers[0], doc=MERGE_DOC)
            tree, _conflicts = bare.merge_tree(base, head)
            if tree is None:
                raise ApiError(405, "Pull Request is not mergeable", doc=MERGE_DOC)
            message = _merge_message(bare, ref.owner, item, method, data, base, head)
            who = payloads.identity_for(login)
            committer = payloads.identity_for("web-flow")
            parents = [base, head] if method == "merge" else [base]
            sha = bare.commit_tree(tree, parents, message, who, committer)
            if bare.update_ref(
                f"refs/heads/{item.base_ref}", sha, base, f"merge pull request #{item.number}"
            ):
                break
        else:
            raise ApiError(409, "Base branch was modified. Review and try the merge again.", doc=MERGE_DOC)
        core.mark_merged(ref, bare, item, sha, base, login)
        core.ref_changed(ref, bare, f"refs/heads/{item.base_ref}", base, sha, login)
    return {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}


def _merge_message(
    bare: BareRepo, owner: str, item: Pull, method: str, data: dict[str, Any], base: str, head: str
) -> str:
    """GitHub's default titles: "Merge pull request #N from owner/branch" or "Title (#N)"."""
    if method == "merge":
        title = data.get("commit_title") or f"Merge pull request #{item.number} from {owner}/{item.head_ref}"
        body = data.get("commit_message", item.title)
    else:
        title = data.get("commit_title") or f"{item.title} (#{item.number})"
        default = "\n\n".join(f"* {c.message}" for c in bare.log([head, f"^{base}"], reverse=True))
        body = data.get("commit_message", default)
    return f"{title}\n\n{body}\n" if body else f"{title}\n"


# --- handlers ---------------------------------------------------------------------------------
class PullsApi:
    def __init__(self, core: ForgeCore) -> None:
        self.core = core

    def register(self, router: Router) -> None:
        base = "/repos/{owner}/{repo}"
        add = router.add
        add("POST", f"{base}/pulls", self.create, creates=True)
        add("GET", f"{base}/pulls", self.list_pulls)
        add("GET", f"{base}/pulls/{{number}}", self.get)
        add("PATCH", f"{base}/pulls/{{number}}", self.update)
        add("GET", f"{base}/pulls/{{number}}/merge", self.check_merged)
        add("PUT", f"{base}/pulls/{{number}}/merge", self.merge)
        add("GET", f"{base}/pulls/{{number}}/files", self.files)
        add("GET", f"{base}/pulls/{{number}}/commits", self.commits)
        add("GET", f"{base}/pulls/{{number}}/requested_reviewers", self.list_reviewers)
        add("POST", f"{base}/pulls/{{number}}/requested_reviewers", self.request_reviewers)
        add("DELETE", f"{base}/pulls/{{number}}/requested_reviewers", self.remove_reviewers)
        add("GET", f"{base}/pulls/{{number}}/reviews", self.list_reviews)
        add("POST", f"{base}/pulls/{{number}}/reviews", self.create_review, creates=True)
        add("GET", f"{base}/commits/{{sha}}/pulls", self.for_commit)
        add("GET", f"{base}/issues/{{number}}/labels", self.list_labels)
        add("POST", f"{base}/issues/{{number}}/labels", self.add_labels)
        add("PUT", f"{base}/issues/{{number}}/labels", self.set_labels)
        add("DELETE", f"{base}/issues/{{number}}/labels/{{name}}", self.remove_label)
        add("GET", f"{base}/issues/{{number}}/comments", self.list_comments)
        add("POST", f"{base}/issues/{{number}}/comments", self.add_comment, creates=True)

    def _ctx(self, req: Request) -> tuple[RepoRef, BareRepo]:
        return self.core.repo(req.params["owner"], req.params["repo"])

    def _pull(self, req: Request) -> tuple[RepoRef, BareRepo, Pull]:
        ref, bare = self._ctx(req)
        return ref, bare, self.core.pull(ref, req.params["number"])

    def create(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        item = pull_create(self.core, ref, bare, req.json_object(), req.login or "")
        body = self.core.pull_payload(ref, bare, item)
        return Response(201, body, {"Location": body["url"]})

    def list_pulls(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        state = req.query.get("state", "open")
        head = parse_head(ref, req.query["head"]) if req.query.get("head") else None
        base = req.query.get("base")
        items = [
            p
            for p in self.core.pulls(ref)
            if (state == "all" or p.state == state)
            and (head is None or p.head_ref == head)
            and (base is None or p.base_ref == base)
        ]
        sort = req.query.get("sort", "created")
        key = {"updated": lambda p: p.updated_at}.get(sort, lambda p: (p.created_at, p.number))
        items.sort(key=key, reverse=req.query.get("direction", "desc") == "desc")
        page = paginate(req, items, self.core.base_url)
        page.body = self.core.pull_list_payloads(ref, bare, page.body)
        return page

    def get(self, req: Request) -> Response:
        ref, bare, item = self._pull(req)
        return Response(200, self.core.pull_payload(ref, bare, item))

    def update(self, req: Request) -> Response:
        ref, bare, item = self._pull(req)
        data = req.json_object()
        actor = req.login or ""
        new_state = data.get("state")
        if new_state not in (None, "open", "closed"):
            raise validation_failed({"resource": "PullRequest", "field": "state", "code": "invalid"})
        if "base" in data and not bare.branch_sha(str(data["base"])):
            raise validation_failed({"resource": "PullRequest", "field": "base", "code": "invalid"})
        with self.core.state.lock:
            for key in ("title", "body"):
                if key in data:
                    setattr(item, key, data[key])
            if "base" in data:
                item.base_ref = str(data["base"])
            if "draft" in data:  # GitHub needs GraphQL for this; the emulator accepts it over REST
                item.draft = bool(data["draft"])
            item.updated_at = now_iso()
        self.core.state.save()
        if new_state == "closed" and item.state == "open":
            self.core.close_pull(ref, bare, item, actor)
        elif new_state == "open" and item.state == "closed" and not item.merged:
            self._reopen(ref, bare, item, actor)
        return Response(200, self.core.pull_payload(ref, bare, item))

    def _reopen(self, ref: RepoRef, bare: BareRepo, item: Pull, actor: str) -> None:
        head_sha = bare.branch_sha(item.head_ref)
        if head_sha is None:
            raise validation_failed(
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": "state cannot be changed. The head branch was deleted.",
                }
            )
        with self.core.state.lock:
            item.state, item.closed_at, item.head_sha, item.updated_at = "open", None, head_sha, now_iso()
        self.core.state.save()
        self.core.emit_pull(ref, bare, item, "reopened", actor)

    def check_merged(self, req: Request) -> Response:
        _ref, _bare, item = self._pull(req)
        if item.merged:
            return Response(204)
        return Response(404, None)

    def merge(self, req: Request) -> Response:
        ref, bare, item = self._pull(req)
        return Response(200, pull_merge(self.core, ref, bare, item, req.login or "", req.json_object()))

    def files(self, req: Request) -> Response:
        ref, bare, item = self._pull(req)
        head, base = self.core.live_shas(bare, item)
        changes = bare.diff(bare.merge_base(base, head) or base, head)
        page = paginate(req, changes, self.core.base_url)
        page.body = [payloads.diff_entry(ref, head, c) for c in page.body]
        return page

    def commits(self, req: Request) -> Response:
        ref, bare, item = self._pull(req)
        head, base = self.core.live_shas(bare, item)
        infos = bare.log([head, f"^{base}"], reverse=True)  # oldest first, as GitHub lists them
        page = paginate(req, infos, self.core.base_url)
        page.body = [payloads.commit(ref, info) for info in page.body]
        return page

    # --- review requests and reviews ------------------------------------------------------------
    def list_reviewers(self, req: Request) -> Response:
        ref, _bare, item = self._pull(req)
        return Response(
            200,
            {
                "users": [payloads.user(ref.base, login) for login in item.requested_reviewers],
                "teams": [payloads.team(ref.base, ref.owner, slug) for slug in item.requested_teams],
            },
        )

    def request_reviewers(self, req: Request) -> Response:
        ref, bare, item = self._pull(req)
        data = req.json_object()
        reviewers = [str(r) for r in data.get("reviewers") or []]
        teams = [str(t) for t in data.get("team_reviewers") or []]
        if not reviewers and not teams:
            raise validation_failed(
                {"resource": "PullRequest", "field": "reviewers", "code": "missing_field"}
            )
        if item.user in reviewers:
            raise validation_failed(
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": "Review cannot be requested from pull request author.",
                }
            )
        with self.core.state.lock:
            item.requested_reviewers += [r for r in reviewers if r not in item.requested_reviewers]
            item.requested_teams += [t for t in teams if t not in item.requested_teams]
            item.updated_at = now_iso()
        self.core.state.save()
        return Response(201, self.core.pull_payload(ref, bare, item, full=False))

    def remove_reviewers(self, req: Request) -> Response:
        ref, bare, item = self._pull(req)
        data = req.json_object()
        with self.core.state.lock:
            item.requested_reviewers = [
                r for r in item.requested_reviewers if r not in (data.get("reviewers") or [])
            ]
            item.requested_teams = [
                t for t in item.requested_teams if t not in (data.get("team_reviewers") or [])
            ]
        self.core.state.save()
        return Response(200, self.core.pull_payload(ref, bare, item, full=False))

    def list_reviews(self, req: Request) -> Response:
        ref, _bare, item = self._pull(req)
        page = paginate(req, item.reviews, self.core.base_url)
        page.body = [payloads.review(ref, item.number, r) for r in page.body]
        return page

    def create_review(self, req: Request) -> Response:
        ref, bare, item = self._pull(req)
        data = req.json_object()
        login = req.login or ""
        event = data.get("event")
        if event is not None and event not in REVIEW_EVENTS:
            raise validation_failed({"resource": "PullRequestReview", "field": "event", "code": "invalid"})
        if event in ("APPROVE", "REQUEST_CHANGES") and login == item.user:
            verb = "approve" if event == "APPROVE" else "request changes on"
            raise ApiError(
                422,
                "Unprocessable Entity",
                errors=[f"Can not {verb} your own pull request"],
                doc="/pulls/reviews#create-a-review-for-a-pull-request",
            )
        if event in ("COMMENT", "REQUEST_CHANGES") and not data.get("body"):
            raise validation_failed(
                {"resource": "PullRequestReview", "field": "body", "code": "missing_field"}
            )
        head, _base = self.core.live_shas(bare, item)
        review = Review(
            id=self.core.state.new_id(),
            user=login,
            state=REVIEW_EVENTS.get(event or "", "PENDING"),
            body=str(data.get("body") or ""),
            commit_id=str(data.get("commit_id") or head),
            submitted_at=now_iso(),
        )
        with self.core.state.lock:
            item.reviews.append(review)
            # Submitting a review fulfils the review request, as on GitHub.
            item.requested_reviewers = [r for r in item.requested_reviewers if r != login]
        self.core.state.save()
        return Response(200, payloads.review(ref, item.number, review))

    def for_commit(self, req: Request) -> Response:
        ref, bare = self._ctx(req)
        sha = self.core.commit_or_404(bare, req.params["sha"]).sha
        items = []
        branches = bare.branches()
        for item in self.core.pulls(ref):
            head, base = self.core.live_shas(bare, item, branches)
            # A commit belongs to a pull if it is its head, its merge, or one of its new commits.
            in_branch = bare.is_ancestor(sha, head) and not bare.is_ancestor(sha, base)
            if in_branch or sha in (head, item.merge_commit_sha):
                items.append(item)
        page = paginate(req, items, self.core.base_url)
        page.body = self.core.pull_list_payloads(ref, bare, page.body)
        return page

    # --- issues: labels and comments -----------------------------------------------------------
    def _labels_response(self, ref: RepoRef, item: Pull) -> Response:
        return Response(200, [payloads.label(ref, lbl) for lbl in self.core.labels_for(ref, item)])

    def _label_names(self, req: Request) -> list[str]:
        data = req.json()
        names = data.get("labels", []) if isinstance(data, dict) else data
        if not isinstance(names, list):
            raise validation_failed({"resource": "Label", "field": "labels", "code": "invalid"})
        return [str(n["name"] if isinstance(n, dict) else n) for n in names]

    def _ensure_labels(self, ref: RepoRef, names: list[str]) -> None:
        catalog = self.core.repo_state(ref).labels
        for name in names:
            if name not in catalog:  # GitHub creates unknown labels on first use
                color = LABEL_COLORS[len(catalog) % len(LABEL_COLORS)]
                catalog[name] = Label(id=self.core.state.new_id(), name=name, color=color)

    def list_labels(self, req: Request) -> Response:
        ref, _bare, item = self._pull(req)
        return self._labels_response(ref, item)

    def add_labels(self, req: Request) -> Response:
        ref, _bare, item = self._pull(req)
        names = self._label_names(req)
        with self.core.state.lock:
            self._ensure_labels(ref, names)
            item.labels += [n for n in names if n not in item.labels]
            item.updated_at = now_iso()
        self.core.state.save()
        return self._labels_response(ref, item)

    def set_labels(self, req: Request) -> Response:
        ref, _bare, item = self._pull(req)
        names = self._label_names(req)
        with self.core.state.lock:
            self._ensure_labels(ref, names)
            item.labels = list(dict.fromkeys(names))
        self.core.state.save()
        return self._labels_response(ref, item)

    def remove_label(self, req: Request) -> Response:
        ref, _bare, item = self._pull(req)
        name = req.params["name"]
        if name not in item.labels:
            raise ApiError(404, "Label does not exist")
        with self.core.state.lock:
            item.labels.remove(name)
        self.core.state.save()
        return self._labels_response(ref, item)

    def list_comments(self, req: Request) -> Response:
        ref, _bare, item = self._pull(req)
        page = paginate(req, item.comments, self.core.base_url)
        page.body = [payloads.issue_comment(ref, item.number, c) for c in page.body]
        return page

    def add_comment(self, req: Request) -> Response:
        ref, _bare, item = self._pull(req)
        body = req.json_object().get("body")
        if not body:
            raise validation_failed({"resource": "IssueComment", "field": "body", "code": "missing_field"})
        stamp = now_iso()
        comment = Comment(
            id=self.core.state.new_id(),
            user=req.login or "",
            body=str(body),
            created_at=stamp,
            updated_at=stamp,
        )
        with self.core.state.lock:
            item.comments.append(comment)
        self.core.state.save()
        return Response(201, payloads.issue_comment(ref, item.number, comment))
