"""Request pipeline: admin routes, faults, auth, rate-limit headers, routing, and smart-HTTP git."""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
import uuid
from functools import partial

from .admin import AdminApi
from .checks import ChecksApi, SimulatedCI
from .core import ForgeCore
from .faults import FaultInjector
from .gitstore import GitCommandError
from .pages import Pages
from .pulls import PullsApi
from .repos import ReposApi
from .routing import ApiError, Handler, Request, Response, Router
from .smart_http import GitTarget, git_target, run_http_backend, wants_push

logger = logging.getLogger(__name__)
AUTH_LIMIT, ANON_LIMIT, WINDOW = 5000, 60, 3600
API_VERSION = "2022-11-28"


class RateLimiter:
    """GitHub's primary budget per identity and hour; only reported, never enforced (faults do that)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}

    def hit(self, key: str, limit: int) -> tuple[int, int, int]:
        now = int(time.time())
        with self._lock:
            start, used = self._windows.get(key, (now, 0))
            if now >= start + WINDOW:
                start, used = now, 0
            used += 1
            self._windows[key] = (start, used)
        return limit, used, start + WINDOW


class ForgeApp:
    def __init__(self, core: ForgeCore, faults: FaultInjector) -> None:
        self.core = core
        self.faults = faults
        self.rates = RateLimiter()
        self.api = Router()
        repos = ReposApi(core)
        repos.register(self.api)
        PullsApi(core).register(self.api)
        self.ci = SimulatedCI(core)
        core.ci = self.ci
        ChecksApi(core, self.ci).register(self.api)
        repos.register_late(self.api)
        self.admin = Router()
        AdminApi(core, faults, self.ci).register(self.admin)
        self.pages = Router()
        Pages(core).register(self.pages)

    # --- auth -------------------------------------------------------------------------------
    def login_for(self, authorization: str | None) -> tuple[bool, str | None]:
        """Return (credentials_present, login); `token`, `Bearer` and Basic (password=token) work."""
        if not authorization:
            return False, None
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() in ("bearer", "token"):
            return True, self.core.users.get(value)
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return True, None
            # Like GitHub: any username with the token as password, or the token as the username.
            return True, self.core.users.get(password) or self.core.users.get(user)
        return True, None

    # --- REST -------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        request_id = uuid.uuid4().hex[:16].upper()
        if req.path.startswith("/sandbox/"):
            response = self._dispatch(self.admin, req)
            self._record(req, response, "admin")
            return response
        if req.method in ("GET", "POST") and self.pages.match(req.method, req.path)[0] is not None:
            response = self._dispatch(self.pages, req)  # browser pages: no token, no faults
            self._record(req, response, "page")
            return response
        self.faults.delay(req)
        _present, req.login = self.login_for(req.headers.get("authorization"))
        key = req.login or f"anon:{req.headers.get('x-forwarded-for', 'local')}"
        req.rate = self.rates.hit(key, AUTH_LIMIT if req.login else ANON_LIMIT)
        response = self._api_response(req, request_id)
        response.headers = {**self._standard_headers(req, request_id), **response.headers}
        self._record(req, response, req.route or "unmatched")
        return response

    def _api_response(self, req: Request, request_id: str) -> Response:
        fault = self.faults.before(req, request_id=request_id)
        if fault is not None:
            return fault
        route, params, _known = self.api.match(req.method, req.path)
        if route is None:
            return ApiError(404, "Not Found").response()
        req.params, req.route = params, route.name
        if req.login is None:
            # The emulated repos act as private ones: the portal must always send its token.
            return ApiError(
                401, "Bad credentials", doc="/authentication/authenticating-to-the-rest-api"
            ).response()
        response = self._call(route.handler, req)
        if route.creates and 200 <= response.status < 300:
            return self.faults.after_create(req) or response
        return response

    def _dispatch(self, router: Router, req: Request) -> Response:
        route, params, _known = router.match(req.method, req.path)
        if route is None:
            return ApiError(404, "Not Found").response()
        req.params, req.route = params, route.name
        return self._call(route.handler, req)

    def _call(self, handler: Handler, req: Request) -> Response:
        try:
            return handler(req)
        except ApiError as exc:
            return exc.response()
        except GitCommandError as exc:
            logger.exception("git failed while handling %s %s", req.method, req.path)
            return ApiError(500, f"Server Error: {exc}").response()

    def _standard_headers(self, req: Request, request_id: str) -> dict[str, str]:
        limit, used, reset = req.rate
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - used)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": "core",
            "x-github-request-id": request_id,
            "x-github-api-version-selected": API_VERSION,
        }

    def _record(self, req: Request, response: Response, route: str) -> None:
        with self.core.state.lock:
            self.core.state.request_counts[route] += 1
            self.core.state.request_log.append(
                {
                    "method": req.method,
                    "path": req.path,
                    "route": route,
                    "status": response.status,
                    "login": req.login,
                }
            )

    # --- smart HTTP -------------------------------------------------------------------------
    def is_git(self, path: str) -> bool:
        return git_target(path) is not None

    def handle_git(self, req: Request, query_string: str, remote_addr: str) -> Response:
        """Serve clone/fetch/push; pushes need a token and produce push webhooks."""
        target = git_target(req.path)
        assert target is not None
        request_id = uuid.uuid4().hex[:16].upper()
        push = wants_push(target, query_string)
        req.route = (
            f"{req.method} /{{owner}}/{{repo}}.git{'/git-receive-pack' if push else '/git-upload-pack'}"
        )
        response = self._git_response(req, target, query_string, remote_addr, push, request_id)
        self._record(req, response, req.route)
        return response

    def _git_response(
        self,
        req: Request,
        target: GitTarget,
        query_string: str,
        remote_addr: str,
        push: bool,
        request_id: str,
    ) -> Response:
        self.faults.delay(req, is_git=True)
        fault = self.faults.before(req, request_id=request_id, is_git=True)
        if fault is not None:
            return fault
        present, req.login = self.login_for(req.headers.get("authorization"))
        if (push and req.login is None) or (present and req.login is None):
            # The challenge makes git retry with the credentials embedded in the URL or a helper.
            return Response(
                401,
                b"Authentication required\n",
                {"WWW-Authenticate": 'Basic realm="GitHub"', "Content-Type": "text/plain"},
            )
        try:
            ref, bare = self.core.repo(target.owner, target.repo)
        except ApiError:
            return Response(404, b"Repository not found.\n", {"Content-Type": "text/plain"})
        run = partial(
            run_http_backend,
            self.core.repos_dir,
            method=req.method,
            path=target.path_info,
            query_string=query_string,
            headers=req.headers,
            body=req.body,
            remote_user=req.login,
            remote_addr=remote_addr,
        )
        if not (push and req.method == "POST"):
            result = run()
        else:
            with self.core.repo_lock(ref.full_name):
                before = bare.refs("refs/")
                result = run()
                after = bare.refs("refs/")
                for name in sorted(set(before) | set(after)):
                    if before.get(name) != after.get(name):
                        self.core.ref_changed(
                            ref, bare, name, before.get(name), after.get(name), req.login or ""
                        )
        return Response(result.status, result.body, dict(result.headers))
