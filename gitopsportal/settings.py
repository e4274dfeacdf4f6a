"""Settings read from the environment (12-factor). Every variable is listed in .env.example."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from accounts.rolemap import parse_role_map
from core.env import (
    check_redis_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("GITOPSPORTAL_VAR_DIR") or BASE_DIR / "var")

# production: PostgreSQL + Redis, DEBUG off, a real secret; development: embedded defaults.
PORTAL_ENV = env_choice("GITOPSPORTAL_ENV", "development", ("development", "production"))
PRODUCTION = PORTAL_ENV == "production"
DEBUG = env_bool("DEBUG", not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG: must be off when GITOPSPORTAL_ENV=production")


def _development_secret(name: str, nbytes: int = 50) -> str:
    """Return a per-checkout random secret kept under var/ (development only)."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / f"dev-{name}"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY: required in production (or SECRET_KEY_FILE)")
    SECRET_KEY = _development_secret("secret-key")

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"]
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- database -------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
# Role separation (docs/security.md): DATABASE_URL is the runtime role of the web, workers and beat;
# DATABASE_MIGRATE_URL, when set, is the owner role that `manage.py migrate` connects as. The
# migrations grant the runtime role full DML on every table but only INSERT/SELECT on the audit
# ledger and its checkpoints, so the credentials the portal runs with cannot rewrite its evidence.
DATABASE_MIGRATE_URL = env_str("DATABASE_MIGRATE_URL")
# The role the migrations grant to: the user of DATABASE_URL ("" with SQLite or no separation).
DATABASE_RUNTIME_USER = ""
if DATABASE_MIGRATE_URL and not DATABASE_URL:
    raise ImproperlyConfigured("DATABASE_MIGRATE_URL: set DATABASE_URL (the runtime role) beside it")
if DATABASE_URL:
    DATABASES = {"default": parse_database_url(DATABASE_URL)}
    DATABASE_RUNTIME_USER = DATABASES["default"].get("USER", "")
    if DATABASE_MIGRATE_URL:
        _owner = parse_database_url(DATABASE_MIGRATE_URL, variable="DATABASE_MIGRATE_URL")
        if [_owner.get(k) for k in ("ENGINE", "NAME", "HOST", "PORT")] != [
            DATABASES["default"].get(k) for k in ("ENGINE", "NAME", "HOST", "PORT")
        ]:
            raise ImproperlyConfigured(
                "DATABASE_MIGRATE_URL: must name the same database as DATABASE_URL (another user only)"
            )
        # Only `manage.py migrate` runs as the owner; every other process keeps the runtime role.
        if len(sys.argv) > 1 and sys.argv[1] == "migrate":
            DATABASES = {"default": _owner}
elif PRODUCTION:
    raise ImproperlyConfigured("DATABASE_URL: required in production (postgres://user@host:5432/db)")
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "portal.sqlite3"),
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
            },
        }
    }
DATABASE_IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")
if PRODUCTION and not DATABASE_IS_POSTGRES:
    raise ImproperlyConfigured("DATABASE_URL: production needs PostgreSQL, not SQLite")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- broker ---------------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    check_redis_url(REDIS_URL)
    _xdist_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    _redis_base, _, _redis_db = REDIS_URL.rpartition("/")
    if _xdist_worker.startswith("gw") and _redis_db.isdigit():
        # Parallel test processes must not share a broker: worker N uses REDIS_URL's database + N.
        REDIS_URL = f"{_redis_base}/{int(_redis_db) + int(_xdist_worker[2:])}"
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    BROKER_IS_EMBEDDED = False
elif PRODUCTION:
    raise ImproperlyConfigured("REDIS_URL: required in production (the embedded broker is for the demo only)")
else:
    # A broker with no server: kombu's SQLAlchemy transport on a SQLite file under var/.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
    CELERY_RESULT_BACKEND = f"db+sqlite:///{VAR_DIR / 'celery-results.sqlite3'}"
    BROKER_IS_EMBEDDED = True

# Counters shared by every process (the audit aggregation of unauthenticated failures): Redis when
# configured, else the per-process memory cache of the development setup.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "gitopsportal",
        }
    }

# Ordering that keeps late acks safe: retries < hard limit < visibility timeout.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 3600)
CELERY_RETRY_BACKOFF_MAX = env_int("CELERY_RETRY_BACKOFF_MAX", 120)
if not CELERY_RETRY_BACKOFF_MAX < CELERY_TASK_TIME_LIMIT < CELERY_VISIBILITY_TIMEOUT:
    raise ImproperlyConfigured(
        "CELERY_VISIBILITY_TIMEOUT: must exceed CELERY_TASK_TIME_LIMIT, which must exceed CELERY_RETRY_BACKOFF_MAX"
    )
# Redis redelivers an unacked message after the visibility timeout; the SQLAlchemy transport has none.
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {} if BROKER_IS_EMBEDDED else {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
)
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = CELERY_BROKER_TRANSPORT_OPTIONS
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
POLL_INTERVAL_SECONDS = env_int("POLL_INTERVAL_SECONDS", 30)
GIT_FETCH_INTERVAL_SECONDS = env_int("GIT_FETCH_INTERVAL_SECONDS", 60)
# Each poll also fetches (and ingests) the repositories its apps track, while Argo CD answers the
# list: a sync to a commit the push webhook has not brought in yet is stored without waiting on Git.
# Off by default: one `git ls-remote` per repository per cycle costs more than it saves where the
# push webhook or GIT_FETCH_INTERVAL_SECONDS already bring commits in (bench: a no-change cycle at
# 1,000 apps 1.37x fetch+parse with it, 1.06x without); a sync to an unknown commit is fetched then.
POLL_FETCH_GIT = env_bool("POLL_FETCH_GIT", False)
# Largest repository file the portal reads or writes (manifests are small; anything bigger is refused).
GIT_MAX_FILE_BYTES = env_int("GIT_MAX_FILE_BYTES", 4 * 1024 * 1024)
if GIT_MAX_FILE_BYTES < 1024:
    raise ImproperlyConfigured(f"GIT_MAX_FILE_BYTES: expected at least 1024, got {GIT_MAX_FILE_BYTES}")
# Sweepers re-enqueue lost work and track merged promotions/rollbacks (Argo CD sends no webhook when a
# sync ends): one indexed query each, their messages expire before the next few sweeps.
SWEEP_INTERVAL_SECONDS = env_int("SWEEP_INTERVAL_SECONDS", 10)
if SWEEP_INTERVAL_SECONDS < 1:
    raise ImproperlyConfigured("SWEEP_INTERVAL_SECONDS: must be at least 1")
# A sweep (or a tracking message it sent) still queued after a few intervals is dropped: the next
# sweep sends a fresh one, so a backed-up queue does not fill with duplicates. At least 30 s, so a
# small clock skew between beat and workers cannot expire every message.
SWEEP_EXPIRES_SECONDS = float(max(30, 3 * SWEEP_INTERVAL_SECONDS))
# A merged promotion (or rollback) Argo CD has not deployed after this long ends failed (degraded
# when deployed but not Healthy), with the reason on its page.
PROMOTION_DEPLOY_TIMEOUT_MINUTES = env_int("PROMOTION_DEPLOY_TIMEOUT_MINUTES", 30)
# A portal-driven sync (`sync: portal`) that meets only transient Argo CD errors (5xx, timeouts,
# unreachable) for this long is given up like a permanent refusal: failed on the change's page,
# where an authorised user may retry it.
PORTAL_SYNC_DEADLINE_MINUTES = env_int("PORTAL_SYNC_DEADLINE_MINUTES", 60)
if PORTAL_SYNC_DEADLINE_MINUTES < 1:
    raise ImproperlyConfigured("PORTAL_SYNC_DEADLINE_MINUTES: must be at least 1")
# An emergency rollback nobody approved after the fact this many hours after its request is
# escalated once (ledger event `rollback.approval_escalated`, delivered by notification subscriptions).
EMERGENCY_APPROVAL_DEADLINE_HOURS = env_int("EMERGENCY_APPROVAL_DEADLINE_HOURS", 24)
if EMERGENCY_APPROVAL_DEADLINE_HOURS < 1:
    raise ImproperlyConfigured("EMERGENCY_APPROVAL_DEADLINE_HOURS: must be at least 1")
if PROMOTION_DEPLOY_TIMEOUT_MINUTES < 1:
    raise ImproperlyConfigured("PROMOTION_DEPLOY_TIMEOUT_MINUTES: must be at least 1")
# A worker that claimed the opening of a pull request holds it this long; after that the sweeper may
# hand it to another worker. Longer than a task may run, so two workers never open the same PR.
PROMOTION_PR_LEASE_SECONDS = env_int("PROMOTION_PR_LEASE_SECONDS", CELERY_TASK_TIME_LIMIT + 30)
if PROMOTION_PR_LEASE_SECONDS <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("PROMOTION_PR_LEASE_SECONDS: must exceed CELERY_TASK_TIME_LIMIT")
# A claimed poll of an Argo CD instance may run this long before another worker may take it over.
POLL_TIMEOUT_SECONDS = env_int("POLL_TIMEOUT_SECONDS", 240)
if POLL_TIMEOUT_SECONDS < 1:
    raise ImproperlyConfigured("POLL_TIMEOUT_SECONDS: must be at least 1")
# A poll whose list drops more than max(ARGOCD_REMOVAL_GUARD_MIN, ARGOCD_REMOVAL_GUARD_PERCENT % of the
# live apps) removes nothing: the instance is marked stale until the drop has lasted
# ARGOCD_REMOVAL_GUARD_CYCLES polls (a narrowed token or RBAC change looks exactly like this).
# An empty list while apps were live is never taken as "all deleted" before that either.
ARGOCD_REMOVAL_GUARD_MIN = env_int("ARGOCD_REMOVAL_GUARD_MIN", 5)
ARGOCD_REMOVAL_GUARD_PERCENT = env_int("ARGOCD_REMOVAL_GUARD_PERCENT", 20)
ARGOCD_REMOVAL_GUARD_CYCLES = env_int("ARGOCD_REMOVAL_GUARD_CYCLES", 3)
if ARGOCD_REMOVAL_GUARD_MIN < 0 or not 0 <= ARGOCD_REMOVAL_GUARD_PERCENT <= 100:
    raise ImproperlyConfigured("ARGOCD_REMOVAL_GUARD_MIN must be >= 0, ARGOCD_REMOVAL_GUARD_PERCENT 0-100")
if ARGOCD_REMOVAL_GUARD_CYCLES < 1:
    raise ImproperlyConfigured("ARGOCD_REMOVAL_GUARD_CYCLES: must be at least 1")
# Argo CD API calls: seconds to connect, and to wait for a response (a full application list is the
# slowest read). One pair for every Argo CD client the portal makes.
ARGOCD_CONNECT_TIMEOUT_SECONDS = env_float("ARGOCD_CONNECT_TIMEOUT_SECONDS", 3.05)
ARGOCD_READ_TIMEOUT_SECONDS = env_float("ARGOCD_READ_TIMEOUT_SECONDS", 30.0)
for _name, _value in (
    ("ARGOCD_CONNECT_TIMEOUT_SECONDS", ARGOCD_CONNECT_TIMEOUT_SECONDS),
    ("ARGOCD_READ_TIMEOUT_SECONDS", ARGOCD_READ_TIMEOUT_SECONDS),
):
    if _value <= 0:
        raise ImproperlyConfigured(f"{_name}: must be more than 0 seconds")
# The (connect, read) pair as `requests` takes it.
ARGOCD_TIMEOUT = (ARGOCD_CONNECT_TIMEOUT_SECONDS, ARGOCD_READ_TIMEOUT_SECONDS)
# Full application GETs a poll keeps in flight at once when many apps are new or changed (a first
# poll, a re-list after an outage): the list's `fields` drop status.history, so each such app is one
# GET. Bounded: every GET also costs the Argo CD API server an RBAC check and a cache read; at most
# the 10 keep-alive connections a requests session pools per host.
ARGOCD_FULL_READS_AT_ONCE = env_int("ARGOCD_FULL_READS_AT_ONCE", 4)
if not 1 <= ARGOCD_FULL_READS_AT_ONCE <= 10:
    raise ImproperlyConfigured("ARGOCD_FULL_READS_AT_ONCE: must be 1-10")
# When a poll has more than ARGOCD_STREAM_FULL_READS_OVER apps to read in full, and at least a
# quarter of its list (a first poll, a re-list after an outage), read them
# from one watch stream's initial burst instead (stream `fields` may ask for history, API.md §5-§6):
# one streamed answer, not a GET per app. Apps it does not deliver within
# ARGOCD_STREAM_FULL_READS_SECONDS are read one by one, as are all of them with it disabled.
ARGOCD_STREAM_FULL_READS = env_bool("ARGOCD_STREAM_FULL_READS", True)
ARGOCD_STREAM_FULL_READS_OVER = env_int("ARGOCD_STREAM_FULL_READS_OVER", 200)
ARGOCD_STREAM_FULL_READS_SECONDS = env_float("ARGOCD_STREAM_FULL_READS_SECONDS", 300.0)
if ARGOCD_STREAM_FULL_READS_OVER < 0 or ARGOCD_STREAM_FULL_READS_SECONDS <= 0:
    raise ImproperlyConfigured("ARGOCD_STREAM_FULL_READS_OVER/_SECONDS: must be >= 0 / > 0")
# Committer of the portal's promotion and rollback commits (authors are the requesting users). Not
# git's own GIT_COMMITTER_* variables, which a shell or CI job may set for other reasons.
GIT_COMMITTER_NAME = env_str("GITOPSPORTAL_GIT_COMMITTER_NAME", "GitOps Portal") or "GitOps Portal"
GIT_COMMITTER_EMAIL = (
    env_str("GITOPSPORTAL_GIT_COMMITTER_EMAIL", "gitops-portal@localhost") or "gitops-portal@localhost"
)

# --- applications ---------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "csp",
    "axes",
    "gitopsportal",
    "accounts",
    "inventory",
    "promotions",
    "rollbacks",
    "audit",
    "insight",
]
# The sandbox (emulated Argo CD and forge) is a development and test tool, never loaded in production.
SANDBOX_ENABLED = env_bool("SANDBOX_ENABLED", not PRODUCTION)
if SANDBOX_ENABLED:
    INSTALLED_APPS.append("sandbox")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "gitopsportal.middleware.RequestIdMiddleware",
    "gitopsportal.middleware.AuditContextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.ActingUserMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "gitopsportal.urls"
WSGI_APPLICATION = "gitopsportal.wsgi.application"
ASGI_APPLICATION = "gitopsportal.asgi.application"

TEMPLATES: list[dict[str, Any]] = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            # The portal's filters and tags (`when`, `sha`) on every page without `{% load %}`.
            "builtins": ["core.templatetags.portal"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "gitopsportal.context_processors.portal",
                "promotions.context_processors.approval_inbox",
            ],
        },
    }
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "inventory:matrix"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes): lock a username+IP after repeated failures.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 8)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
# Behind N reverse proxies, the client address is the N-th from the right of X-Forwarded-For.
AXES_IPWARE_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0) or None
if AXES_IPWARE_PROXY_COUNT:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# In containers gunicorn serves the collected static files itself (whitenoise): no web server needed.
SERVE_STATIC = env_bool("SERVE_STATIC", PRODUCTION)
if SERVE_STATIC:
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
        "whitenoise.middleware.WhiteNoiseMiddleware",
    )
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    }

# --- security -------------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie; kept default-compatible
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SILENCED_SYSTEM_CHECKS = ["security.W021"] if not SECURE_HSTS_PRELOAD else []

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

# --- API tokens ---------------------------------------------------------------------------------
# The longest life a personal API token may be given (days); every token expires.
API_TOKEN_MAX_AGE_DAYS = env_int("API_TOKEN_MAX_AGE_DAYS", 90)
if API_TOKEN_MAX_AGE_DAYS < 1:
    raise ImproperlyConfigured("API_TOKEN_MAX_AGE_DAYS: must be at least 1 (every token expires)")

# --- single sign-on (OpenID Connect, mozilla-django-oidc); docs/sso.md --------------------------
OIDC_ENABLED = env_bool("OIDC_ENABLED", False)
OIDC_RP_CLIENT_ID = env_str("OIDC_RP_CLIENT_ID", "") or ""
OIDC_RP_CLIENT_SECRET = env_str("OIDC_RP_CLIENT_SECRET", "") or ""  # or OIDC_RP_CLIENT_SECRET_FILE
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_OP_AUTHORIZATION_ENDPOINT", "") or ""
OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_OP_TOKEN_ENDPOINT", "") or ""
OIDC_OP_USER_ENDPOINT = env_str("OIDC_OP_USER_ENDPOINT", "") or ""
OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_OP_JWKS_ENDPOINT", "") or ""
OIDC_OP_ISSUER = env_str("OIDC_OP_ISSUER", "") or ""  # checked against the ID token's iss when set
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = env_str("OIDC_RP_SCOPES", "openid email profile") or "openid email profile"
OIDC_USE_PKCE = True
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT", 10)
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = env_int("OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS", 900)
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM", "preferred_username") or "preferred_username"
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups") or "groups"
OIDC_ROLE_MAP = env_str("OIDC_ROLE_MAP", "") or ""
OIDC_CREATE_USER = env_bool("OIDC_CREATE_USER", True)
OIDC_VERIFY_SSL = True
OIDC_CALLBACK_CLASS = "mozilla_django_oidc.views.OIDCAuthenticationCallbackView"
# /api/ is not exempt: a session-authenticated API call past the ID token's lifetime gets a 401 that
# asks for a page reload (accounts.middleware), so roles the provider withdrew stop there too.
OIDC_EXEMPT_URLS = [re.compile(r"^/(healthz|readyz|static/)")]
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"


OIDC_ROLE_MAPPINGS = parse_role_map(OIDC_ROLE_MAP)
if OIDC_ENABLED:
    for _name in (
        "OIDC_RP_CLIENT_ID",
        "OIDC_RP_CLIENT_SECRET",
        "OIDC_OP_AUTHORIZATION_ENDPOINT",
        "OIDC_OP_TOKEN_ENDPOINT",
        "OIDC_OP_USER_ENDPOINT",
        "OIDC_OP_JWKS_ENDPOINT",
    ):
        if not globals()[_name]:
            raise ImproperlyConfigured(f"{_name}: required when OIDC_ENABLED is on")
        if _name.startswith("OIDC_OP_") and PRODUCTION and not globals()[_name].startswith("https://"):
            raise ImproperlyConfigured(f"{_name}: must be an https:// URL in production")
    AUTHENTICATION_BACKENDS.insert(1, "accounts.oidc.PortalOIDCBackend")
    MIDDLEWARE.insert(
        MIDDLEWARE.index("axes.middleware.AxesMiddleware"), "accounts.middleware.PortalSessionRefresh"
    )
TEMPLATES[0]["OPTIONS"]["context_processors"].append("accounts.context_processors.sso")

# Secrets at rest (Argo CD and forge tokens): Fernet keys, newest first; rotate with `rotate_secrets`.
ENCRYPTION_KEYS = env_list("GITOPSPORTAL_ENCRYPTION_KEYS", [])
if not ENCRYPTION_KEYS and env_str("GITOPSPORTAL_ENCRYPTION_KEYS_FILE"):
    ENCRYPTION_KEYS = [
        k.strip() for k in (env_str("GITOPSPORTAL_ENCRYPTION_KEYS") or "").split(",") if k.strip()
    ]
if not ENCRYPTION_KEYS:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "GITOPSPORTAL_ENCRYPTION_KEYS: required in production (Fernet keys, comma-separated)"
        )

    # Development: a key derived from the dev secret, so the embedded demo needs no setup.
    ENCRYPTION_KEYS = [
        base64.urlsafe_b64encode(
            hashlib.sha256(_development_secret("encryption-key").encode()).digest()
        ).decode()
    ]


def _check_fernet_keys(keys: list[str]) -> None:
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"GITOPSPORTAL_ENCRYPTION_KEYS: key #{position} is not a Fernet key (32 url-safe base64 bytes)"
            ) from None


_check_fernet_keys(ENCRYPTION_KEYS)

# Audit checkpoints and bundles are signed with Ed25519 (PEM, PKCS#8).
AUDIT_SIGNING_KEY = env_str("AUDIT_SIGNING_KEY")
if not AUDIT_SIGNING_KEY and PRODUCTION:
    raise ImproperlyConfigured("AUDIT_SIGNING_KEY: required in production (Ed25519 private key, PEM)")


def _verify_public_keys(text: str) -> list[str]:
    """Split concatenated PEM public keys (earlier audit signing keys) and check each is Ed25519."""
    text = text.replace("\\n", "\n")
    blocks = re.findall(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", text, re.S)
    if text.strip() and not blocks:
        raise ImproperlyConfigured(
            "AUDIT_VERIFY_PUBLIC_KEYS: no PEM public key (-----BEGIN PUBLIC KEY-----) found"
        )
    for position, block in enumerate(blocks, start=1):
        try:
            key = load_pem_public_key(block.encode())
        except ValueError:
            key = None
        if not isinstance(key, Ed25519PublicKey):
            raise ImproperlyConfigured(
                f"AUDIT_VERIFY_PUBLIC_KEYS: key #{position} is not an Ed25519 public key (PEM)"
            )
    return [block + "\n" for block in blocks]


# Public keys of earlier signing keys (PEM, concatenated; or AUDIT_VERIFY_PUBLIC_KEYS_FILE): checkpoints
# and bundles signed before a key rotation keep verifying.
AUDIT_VERIFY_PUBLIC_KEYS = _verify_public_keys(env_str("AUDIT_VERIFY_PUBLIC_KEYS") or "")
AUDIT_CHECKPOINT_INTERVAL_SECONDS = env_int("AUDIT_CHECKPOINT_INTERVAL_SECONDS", 3600)
# Where each signed checkpoint is shipped after it is made (manage.py audit_ship): a directory
# (append-only checkpoints.jsonl) or an http(s) URL (POST, JSON); "" ships nothing. Keep it out of
# reach of the database credentials: that copy is what detects a truncated or rewritten ledger.
AUDIT_SHIP_TO = env_str("AUDIT_SHIP_TO")
# Bearer token for an http(s) AUDIT_SHIP_TO (or AUDIT_SHIP_TOKEN_FILE).
AUDIT_SHIP_TOKEN = env_str("AUDIT_SHIP_TOKEN")
# Unauthenticated failures (bad webhook signatures, unknown repositories, failed sign-ins) write one
# ledger event per source per minute and a count; more distinct sources than this in a minute are
# counted together under one "many sources" row.
AUDIT_AGGREGATE_MAX_SOURCES = env_int("AUDIT_AGGREGATE_MAX_SOURCES", 50)
# Periodic signed checkpoints of the audit chain head (audit app); merged into any existing schedule.
CELERY_BEAT_SCHEDULE = globals().get("CELERY_BEAT_SCHEDULE", {})
CELERY_BEAT_SCHEDULE["audit-checkpoint"] = {
    "task": "audit.tasks.audit_checkpoint_create_task",
    "schedule": float(AUDIT_CHECKPOINT_INTERVAL_SECONDS),
}
# Rollbacks: re-enqueue PR opening whose message was lost, and track open rollbacks to healthy.
CELERY_BEAT_SCHEDULE["audit-aggregates-flush"] = {
    "task": "audit.tasks.audit_aggregates_flush_task",
    "schedule": 60.0,
}
CELERY_BEAT_SCHEDULE["rollbacks-sweep"] = {
    "task": "rollbacks.tasks.rollbacks_sweep_task",
    "schedule": float(SWEEP_INTERVAL_SECONDS),
    "options": {"expires": SWEEP_EXPIRES_SECONDS},
}
CELERY_BEAT_SCHEDULE["rollbacks-escalate-unapproved"] = {
    "task": "rollbacks.tasks.rollbacks_escalate_unapproved_task",
    "schedule": 300.0,
}
# Promotions: re-enqueue PR opening whose message was lost; poll PRs and rollouts (webhook fallback).
CELERY_BEAT_SCHEDULE["promotions-sweep"] = {
    "task": "promotions.tasks.promotions_sweep_task",
    "schedule": float(SWEEP_INTERVAL_SECONDS),
    "options": {"expires": SWEEP_EXPIRES_SECONDS},
}
# Inventory: poll every Argo CD instance, fetch and ingest every Git repository.
CELERY_BEAT_SCHEDULE["inventory-poll-all"] = {
    "task": "inventory.tasks.poll_all_task",
    "schedule": float(POLL_INTERVAL_SECONDS),
}
CELERY_BEAT_SCHEDULE["inventory-ingest-all"] = {
    "task": "inventory.tasks.ingest_all_task",
    "schedule": float(GIT_FETCH_INTERVAL_SECONDS),
}

# Insight (docs/insight.md): DORA windows, drift/exception thresholds, notifications, /metrics.
INSIGHT_FAILURE_WINDOW_HOURS = env_int("INSIGHT_FAILURE_WINDOW_HOURS", 24)
INSIGHT_SYNC_LAG_MINUTES = env_int("INSIGHT_SYNC_LAG_MINUTES", 15)
INSIGHT_WEBHOOK_MAX_ATTEMPTS = env_int("INSIGHT_WEBHOOK_MAX_ATTEMPTS", 6)
INSIGHT_WEBHOOK_RETRY_BASE_SECONDS = env_int("INSIGHT_WEBHOOK_RETRY_BASE_SECONDS", 10)
INSIGHT_WEBHOOK_ALLOW_HTTP = env_bool("INSIGHT_WEBHOOK_ALLOW_HTTP", not PRODUCTION)
METRICS_TOKEN = env_str("METRICS_TOKEN", "") or ""  # or METRICS_TOKEN_FILE; bearer token for /metrics
CELERY_BEAT_SCHEDULE["insight-deliveries-sweep"] = {
    "task": "insight.tasks.deliveries_sweep_task",
    "schedule": float(SWEEP_INTERVAL_SECONDS),
}
CELERY_BEAT_SCHEDULE["insight-findings-scan"] = {
    "task": "insight.tasks.findings_scan_task",
    "schedule": float(env_int("INSIGHT_SCAN_INTERVAL_SECONDS", 300)),
}

GITOPSPORTAL_CONFIG = env_str("GITOPSPORTAL_CONFIG")
PORTAL_BASE_URL = env_str("PORTAL_BASE_URL", "http://127.0.0.1:8000") or ""
# The commit status the portal posts on the head of every PR it opens (changes.portalstatus): its
# verdict on approvals and gates. Require it in the GitOps repository's branch protection.
PORTAL_STATUS_CONTEXT = env_str("PORTAL_STATUS_CONTEXT", "gitops-portal/gates") or ""
if not PORTAL_STATUS_CONTEXT or len(PORTAL_STATUS_CONTEXT) > 255:
    raise ImproperlyConfigured("PORTAL_STATUS_CONTEXT: a status context of 1 to 255 characters")
MIRRORS_DIR = Path(env_str("GITOPSPORTAL_MIRRORS_DIR") or VAR_DIR / "mirrors")
WORKSPACES_DIR = Path(env_str("GITOPSPORTAL_WORKSPACES_DIR") or VAR_DIR / "workspaces")
FORGE_WEBHOOK_SECRET = env_str("FORGE_WEBHOOK_SECRET", "") or ""
# Seconds a forge webhook delivery id is remembered: a replayed delivery within it does nothing.
FORGE_WEBHOOK_DEDUPE_SECONDS = env_int("FORGE_WEBHOOK_DEDUPE_SECONDS", 7 * 24 * 3600)
if FORGE_WEBHOOK_DEDUPE_SECONDS < 1:
    raise ImproperlyConfigured("FORGE_WEBHOOK_DEDUPE_SECONDS: must be at least 1")

# --- logging --------------------------------------------------------------------------------------
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ("text", "json"))
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "gitopsportal.logging.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "gitopsportal.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
        "axes": {"level": "WARNING"},
    },
}
