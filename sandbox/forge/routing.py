"""Framework-free request/response types, a regex router and GitHub-style errors and pagination."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from .payloads import DOCS


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    login: str | None = None
    route: str = ""
    rate: tuple[int, int, int] = (5000, 0, 0)  # limit, used, reset epoch: filled in by the app

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ApiError(400, "Problems parsing JSON") from exc

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise ApiError(400, "Problems parsing JSON")
        return data

    def int_param(self, name: str, default: int) -> int:
        try:
            return int(self.query.get(name, default))
        except ValueError:
            return default


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or bytes for raw payloads
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, indent=1).encode()


class ApiError(Exception):
    """Raised by handlers; rendered as GitHub's error body `{message, documentation_url[, errors]}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[Any] | None = None,
        doc: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.doc = doc
        self.headers = headers or {}

    def response(self) -> Response:
        body: dict[str, Any] = {"message": self.message, "documentation_url": f"{DOCS}{self.doc}"}
        if self.errors is not None:
            body["errors"] = self.errors
        return Response(self.status, body, dict(self.headers))


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def validation_failed(*errors: dict[str, Any], doc: str = "") -> ApiError:
    return ApiError(422, "Validation Failed", errors=list(errors), doc=doc)


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str  # e.g. "POST /repos/{o}/{r}/pulls": the key of per-route request counts
    handler: Handler
    creates: bool = False  # eligible for the `fail_after_create` fault


_PLACEHOLDER = re.compile(r"\{(\w+)(\+?)\}")


def compile_template(template: str) -> re.Pattern[str]:
    """`/repos/{o}/{r}/branches/{branch+}` → regex; `+` placeholders may contain slashes."""
    regex, pos = "", 0
    for match in _PLACEHOLDER.finditer(template):
        regex += re.escape(template[pos : match.start()])
        regex += f"(?P<{match.group(1)}>.+)" if match.group(2) else f"(?P<{match.group(1)}>[^/]+)"
        pos = match.end()
    return re.compile(f"^{regex}{re.escape(template[pos:])}$")


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, *, creates: bool = False) -> None:
        self.routes.append(
            Route(method, compile_template(template), f"{method} {template}", handler, creates)
        )

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """Return (route, params, path_known); a known path with no route for the method is a 404 too."""
        path_known = False
        for route in self.routes:
            found = route.pattern.match(path)
            if not found:
                continue
            path_known = True
            if route.method == method:
                # Clients percent-encode path segments (branch names, file paths); match raw, decode after.
                return route, {key: unquote(value) for key, value in found.groupdict().items()}, True
        return None, {}, path_known


def parse_query(raw: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(raw, keep_blank_values=True).items()}


def paginate(req: Request, items: list[Any], base_url: str, *, total: int | None = None) -> Response:
    """Slice `items` by per_page/page (GitHub: default 30, max 100) and add a `Link` header.

    When `total` is given, `items` is already the requested page (the caller sliced it in git).
    """
    per_page, page = page_params(req)
    count = total if total is not None else len(items)
    page_items = items if total is not None else items[(page - 1) * per_page : page * per_page]
    headers = {}
    link = link_header(req, base_url, page, per_page, count)
    if link:
        headers["Link"] = link
    return Response(200, page_items, headers)


def page_params(req: Request) -> tuple[int, int]:
    per_page = max(1, min(100, req.int_param("per_page", 30)))
    page = max(1, req.int_param("page", 1))
    return per_page, page


def link_header(req: Request, base_url: str, page: int, per_page: int, total: int) -> str:
    last = max(1, -(-total // per_page))

    def url(number: int) -> str:
        query = {**req.query, "per_page": str(per_page), "page": str(number)}
        return f"{base_url}{req.path}?{urlencode(query)}"

    rels = []
    if page > 1:
        rels += [(page - 1, "prev"), (1, "first")]
    if page < last:
        rels += [(page + 1, "next"), (last, "last")]
    return ", ".join(f'<{url(n)}>; rel="{rel}"' for n, rel in rels)
