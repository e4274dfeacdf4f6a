"""A tiny OpenID Connect provider for tests: code flow with PKCE, RS256 ID tokens, JWKS, userinfo.

It runs on a loopback port in a thread. The test plays the browser: it reads the authorization
request the portal redirects to, asks the provider for a code for that request (as if the user had
signed in), and hands the code to the portal's callback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class LocalOIDCProvider:
    def __init__(self, *, client_id: str = "portal", client_secret: str = "s3cret-client") -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(4)
        self.codes: dict[str, dict[str, Any]] = {}
        self.access_tokens: dict[str, dict[str, Any]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.id_token_overrides: dict[str, Any] = {}
        self.userinfo_overrides: dict[str, Any] = {}
        # Refresh tokens (issued with every code): the provider's current view of each subject's
        # claims can be changed (``set_claims``) or the subject removed (``forget``).
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        self.current_claims: dict[str, dict[str, Any]] = {}
        self.forgotten: set[str] = set()
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> str:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = urlsplit(self.path).path
                if path == "/jwks":
                    jwk = json.loads(RSAAlgorithm.to_jwk(provider.key.public_key()))
                    jwk.update({"kid": provider.kid, "alg": "RS256", "use": "sig"})
                    return self._json(200, {"keys": [jwk]})
                if path == "/userinfo":
                    auth = self.headers.get("Authorization", "")
                    grant = provider.access_tokens.get(auth.removeprefix("Bearer "))
                    if grant is None:
                        return self._json(401, {"error": "invalid_token"})
                    return self._json(200, {**grant["claims"], **provider.userinfo_overrides})
                return self._json(404, {"error": "not_found"})

            def do_POST(self):
                if urlsplit(self.path).path != "/token":
                    return self._json(404, {"error": "not_found"})
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                provider.token_requests.append(form)
                if (
                    form.get("client_id") != provider.client_id
                    or form.get("client_secret") != provider.client_secret
                ):
                    return self._json(401, {"error": "invalid_client"})
                if form.get("grant_type") == "refresh_token":
                    return self._json(*provider.refresh(form.get("refresh_token", "")))
                grant = provider.codes.pop(form.get("code", ""), None)
                if grant is None or form.get("grant_type") != "authorization_code":
                    return self._json(400, {"error": "invalid_grant"})
                verifier = form.get("code_verifier", "")
                challenge = (
                    base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                )
                if challenge != grant["code_challenge"]:
                    return self._json(400, {"error": "invalid_grant", "error_description": "PKCE"})
                if form.get("redirect_uri") != grant["redirect_uri"]:
                    return self._json(400, {"error": "invalid_grant", "error_description": "redirect_uri"})
                return self._json(200, provider.issue(grant))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.base_url

    def issue(self, grant: dict[str, Any]) -> dict[str, Any]:
        """Return a token response for ``grant``: access, ID and (rotated) refresh token."""
        access = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        self.access_tokens[access] = grant
        self.refresh_tokens[refresh] = grant
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 300,
            "refresh_token": refresh,
            "id_token": self.id_token(grant),
        }

    def refresh(self, token: str) -> tuple[int, dict[str, Any]]:
        """Answer a refresh_token grant: the subject's current claims, or invalid_grant."""
        grant = self.refresh_tokens.pop(token, None)
        if grant is None or grant["claims"]["sub"] in self.forgotten:
            return 400, {"error": "invalid_grant"}
        sub = grant["claims"]["sub"]
        claims = {**grant["claims"], **self.current_claims.get(sub, {})}
        return 200, self.issue({**grant, "claims": claims})

    def set_claims(self, sub: str, **claims: Any) -> None:
        """Change what the provider says about ``sub`` from now on (e.g. its groups)."""
        self.current_claims.setdefault(sub, {}).update(claims)

    def forget(self, sub: str) -> None:
        """Remove the user: their refresh tokens stop working (offboarding)."""
        self.forgotten.add(sub)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def settings(self) -> dict[str, Any]:
        """Return the portal settings that point at this provider."""
        return {
            "OIDC_ENABLED": True,
            "OIDC_RP_CLIENT_ID": self.client_id,
            "OIDC_RP_CLIENT_SECRET": self.client_secret,
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.base_url}/authorize",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.base_url}/token",
            "OIDC_OP_USER_ENDPOINT": f"{self.base_url}/userinfo",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.base_url}/jwks",
            "OIDC_OP_ISSUER": self.base_url,
        }

    # --- the user's side --------------------------------------------------------------------------
    def authorize(self, authorization_url: str, claims: dict[str, Any]) -> dict[str, str]:
        """Act as the user signing in: check the request, return the callback's query (code, state)."""
        parts = urlsplit(authorization_url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{self.base_url}/authorize"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        assert query["client_id"] == self.client_id
        assert query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256"
        assert "openid" in query["scope"].split()
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "claims": {"sub": claims.get("sub", "subject-1"), **claims},
            "nonce": query.get("nonce"),
            "code_challenge": query["code_challenge"],
            "redirect_uri": query["redirect_uri"],
        }
        return {"code": code, "state": query["state"]}

    def id_token(self, grant: dict[str, Any]) -> str:
        now = int(time.time())
        payload = {
            "iss": self.base_url,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"],
            **grant["claims"],
            **self.id_token_overrides,
        }
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})
