"""FedHaem portal settings: one module, every knob read from the environment.

Unset variables fall back to safe local defaults (SQLite and an embedded Redis under `var/`,
the development identity provider on loopback). A malformed value stops start-up with a message
naming the variable. See the configuration table in README.md.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal import env
from portal.core.private_files import restrict_umask, tighten

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.string("FEDHAEM_VAR_DIR", str(BASE_DIR / "var"))).resolve()
# var/ holds the SQLite database (sessions, API tokens), secrets, cohorts and run folders: files
# 0600 and folders 0700, for what this process creates from here on (umask, inherited by the
# Celery worker, the SuperLink and nodes it starts) and for what is already there.
restrict_umask()
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
tighten(VAR_DIR)

FEDHAEM_ENV = env.string("FEDHAEM_ENV", "development")
if FEDHAEM_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(f"FEDHAEM_ENV={FEDHAEM_ENV!r} must be 'development' or 'production'")
PRODUCTION = FEDHAEM_ENV == "production"


def _dev_secret(name: str, nbytes: int = 48) -> str:
    """A development secret generated once into var/secrets/ (ignored by git)."""
    path = VAR_DIR / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(nbytes))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.secret("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set in production")
    SECRET_KEY = _dev_secret("django_secret_key")

DEBUG = env.boolean("DEBUG", False)
ALLOWED_HOSTS = env.csv_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.csv_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "channels",
    "mozilla_django_oidc",
    "portal.core",
    "portal.accounts",
    "portal.audit",
    "portal.nodes",
    "portal.datasets",
    "portal.studies",
    "portal.synthesis",
    "portal.analyses",
    "portal.experiments",
    "portal.ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "portal.audit.context.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.accounts.middleware.UserTimezoneMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.accounts.context_processors.roles",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------
_default_db = f"sqlite:///{VAR_DIR / 'fedhaem.sqlite3'}"
_db_url = env.url("DATABASE_URL", _default_db, ("sqlite", "postgres", "postgresql", "pgsql"))
try:
    DATABASES = {"default": dj_database_url.parse(_db_url, conn_max_age=env.integer("DB_CONN_MAX_AGE", 0, 0))}
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from None
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Several processes write (portal, Celery worker, beat): WAL lets readers run beside the one
    # writer; BEGIN IMMEDIATE takes the write lock when a transaction starts, so a transaction
    # that read first never fails on the read->write upgrade (SQLite cannot wait there, only at
    # BEGIN); `timeout` is the busy wait in seconds. portal.core.db.retry_on_lock covers the rest.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": env.integer("SQLITE_BUSY_TIMEOUT", 20, 1, 600),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    }
    # A file, not memory: browser tests serve the portal from a separate process (daphne).
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-fedhaem.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker, channel layer ------------------------------------------------------
EMBEDDED_REDIS_PORT = env.integer("EMBEDDED_REDIS_PORT", 6391, 1024, 65535)
_redis = env.url("REDIS_URL", None, ("redis", "rediss", "unix"))
EMBEDDED_REDIS = _redis is None
REDIS_URL = _redis or f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task is acknowledged when it ends, not when it starts: a worker killed mid-task leaves its
# message unacknowledged, and the broker hands it out again once the visibility timeout has
# passed (checked when a worker starts, and about every 100 s by a running one). Every task must
# therefore be idempotent: a task redelivered while its first copy still runs finds the work
# taken and returns.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.integer("CELERY_VISIBILITY_TIMEOUT_S", 60, 5, 86400),
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Conclusions (model registration in MLflow, storing a cohort: tens of seconds each) have their own
# queue and worker process, so they never wait behind, nor hold up, the short tasks of the default
# queue (submitting runs, the reconciler, node keys). Every deployment runs a worker on each queue:
# `celery -A portal worker -Q celery` and `celery -A portal worker -Q conclusions`.
# Experiment grids (minutes to hours of computing on the manager) have a third queue and worker,
# `-Q grids`, one grid at a time.
CONCLUSIONS_QUEUE = "conclusions"
GRIDS_QUEUE = "grids"
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {"portal.studies.tasks.conclude_run": {"queue": CONCLUSIONS_QUEUE},
                      "portal.experiments.tasks.execute_grid": {"queue": GRIDS_QUEUE}}
CELERY_TASK_ALWAYS_EAGER = env.boolean("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": env.string("CHANNELS_PREFIX", "fedhaem")},
    }
}

# --- authentication: OIDC only ----------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["portal.accounts.oidc.FedHaemOIDCBackend"]
LOGIN_URL = "oidc_authentication_init"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

DEV_IDP_PORT = env.integer("DEV_IDP_PORT", 8001, 1024, 65535)
OIDC_ISSUER = env.url("OIDC_ISSUER", f"http://127.0.0.1:{DEV_IDP_PORT}/o", ("http", "https")).rstrip("/")
# Defaults follow django-oauth-toolkit's layout (the development provider); set each endpoint
# explicitly for Keycloak (…/protocol/openid-connect/auth, token, userinfo, certs).
OIDC_OP_AUTHORIZATION_ENDPOINT = env.string("OIDC_OP_AUTHORIZATION_ENDPOINT", f"{OIDC_ISSUER}/authorize/")
OIDC_OP_TOKEN_ENDPOINT = env.string("OIDC_OP_TOKEN_ENDPOINT", f"{OIDC_ISSUER}/token/")
OIDC_OP_USER_ENDPOINT = env.string("OIDC_OP_USER_ENDPOINT", f"{OIDC_ISSUER}/userinfo/")
OIDC_OP_JWKS_ENDPOINT = env.string("OIDC_OP_JWKS_ENDPOINT", f"{OIDC_ISSUER}/.well-known/jwks.json")
OIDC_OP_LOGOUT_ENDPOINT = env.string("OIDC_OP_LOGOUT_ENDPOINT", f"{OIDC_ISSUER}/logout/")
# Sign-out ends the provider's session too (RP-Initiated Logout with id_token_hint and
# post_logout_redirect_uri = PORTAL_BASE_URL + LOGOUT_REDIRECT_URL, which the provider must
# list); OIDC_OP_LOGOUT_ENDPOINT empty: the portal session only.
OIDC_OP_LOGOUT_URL_METHOD = "portal.accounts.oidc.provider_logout_url"
OIDC_RP_CLIENT_ID = env.string("OIDC_RP_CLIENT_ID", "fedhaem-portal")
OIDC_RP_CLIENT_SECRET = env.secret("OIDC_RP_CLIENT_SECRET")
if not OIDC_RP_CLIENT_SECRET:
    if PRODUCTION:
        raise ImproperlyConfigured("OIDC_RP_CLIENT_SECRET (or OIDC_RP_CLIENT_SECRET_FILE) must be set in production")
    OIDC_RP_CLIENT_SECRET = _dev_secret("oidc_client_secret", 32)
OIDC_RP_SIGN_ALGO = env.string("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = env.string("OIDC_RP_SCOPES", "openid email profile")
OIDC_USE_PKCE = True
OIDC_STORE_ID_TOKEN = True
OIDC_ROLES_CLAIM = env.string("OIDC_ROLES_CLAIM", "roles")
OIDC_ORGANISATION_CLAIM = env.string("OIDC_ORGANISATION_CLAIM", "organisation")
# A person is a Django superuser only while this value is in their roles claim (reset at every
# sign-in; empty: nobody). Roles, organisation and staff status likewise come from claims only.
OIDC_SUPERUSER_ROLE = env.string("OIDC_SUPERUSER_ROLE", "superuser")
OIDC_TIMEOUT = env.integer("OIDC_TIMEOUT", 10, 1)
OIDC_VERIFY_SSL = env.boolean("OIDC_VERIFY_SSL", True)

# --- API ----------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.accounts.authentication.ThrottledTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "portal.core.api.Pagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "portal.core.api.exception_handler",
}
# Wrong API tokens: this many from one address within TOKEN_AUTH_LOCKOUT_S seconds lock that
# address out of token authentication (429) for TOKEN_AUTH_LOCKOUT_S seconds.
TOKEN_AUTH_FAILURE_LIMIT = env.integer("TOKEN_AUTH_FAILURE_LIMIT", 20, 1)
TOKEN_AUTH_LOCKOUT_S = env.integer("TOKEN_AUTH_LOCKOUT_S", 300, 1)
SPECTACULAR_SETTINGS = {
    "TITLE": "FedHaem API",
    "DESCRIPTION": "Federated learning for rare haematological diseases: studies, runs, nodes, "
                   "datasets (metadata only) and synthetic cohorts.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Choice sets whose field names ("status", "source") other components use too.
    "ENUM_NAME_OVERRIDES": {"GridRunStatusEnum": "portal.experiments.models.GridRun.Status",
                            "GridRunSourceEnum": "portal.experiments.models.GridRun.Source"},
}

# --- federation, tracking ---------------------------------------------------------------------
# Flower 1.42 serves Fleet, Control and Runtime APIs on ONE port. The portal reaches it as the
# Control address (loopback or the internal network); hospitals reach only the Fleet service,
# through a proxy that forwards the flwr.proto.Fleet gRPC paths and nothing else.
FLOWER_CONTROL_ADDRESS = env.string("FLOWER_CONTROL_ADDRESS", "127.0.0.1:9092")
FLOWER_FLEET_ADDRESS = env.string("FLOWER_FLEET_ADDRESS", FLOWER_CONTROL_ADDRESS)
FLOWER_PKI_DIR = Path(env.string("FLOWER_PKI_DIR", str(VAR_DIR / "pki")))
# The SuperLink's CA certificate (the portal verifies the Control API with it): a file of the
# PKI folder in the demo, a secret shared with the SuperLink's own container in production.
# Empty: FLOWER_PKI_DIR/ca.crt.
FLOWER_CA_CERT = env.string("FLOWER_CA_CERT", "")
# The demo's SuperLink and nodes apply fl_engine/deploy/flower_tuning.py (Flower's fixed sleeps
# and back-offs shortened; the one module that patches Flower, pinned to flwr 1.42). On by
# default since it is what takes a round's overhead under 2 s; FLOWER_TUNING=false gives stock
# Flower waits (the tests run both ways).
FLOWER_TUNING = env.boolean("FLOWER_TUNING", True)
# Fused evaluation: each round's training message also evaluates the global model the node
# received, so a round is one message phase instead of two (+ one final evaluation). The point
# of round r then arrives when round r+1's training replies do, one local training later.
FLOWER_FUSED_EVALUATION = env.boolean("FLOWER_FUSED_EVALUATION", True)
NODE_HEARTBEAT_TIMEOUT_S = env.integer("NODE_HEARTBEAT_TIMEOUT_S", 60, 5)
PORTAL_BASE_URL = env.url("PORTAL_BASE_URL", "http://127.0.0.1:8000", ("http", "https")).rstrip("/")
MLFLOW_TRACKING_URI = env.string("MLFLOW_TRACKING_URI", f"sqlite:///{VAR_DIR / 'mlflow' / 'mlflow.db'}")
MLFLOW_ARTIFACT_ROOT = env.string("MLFLOW_ARTIFACT_ROOT", str(VAR_DIR / "mlflow" / "artifacts"))
RUN_TIME_LIMIT_S = env.integer("RUN_TIME_LIMIT_S", 3600, 10)
ROUND_TIMEOUT_S = env.integer("ROUND_TIMEOUT_S", 600, 5)
# The run lifecycle (portal.studies.lifecycle): ServerApps sign their run events with an HMAC
# under this key (a file shared with the SuperLink's container, never in the run config);
# the reconciler (Celery beat) checks every active run against the SuperLink this often.
RUN_EVENTS_KEY_FILE = Path(env.string("RUN_EVENTS_KEY_FILE", "") or (VAR_DIR / "secrets" / "run_events_key"))
if not RUN_EVENTS_KEY_FILE.exists():
    if PRODUCTION:
        raise ImproperlyConfigured(f"RUN_EVENTS_KEY_FILE {RUN_EVENTS_KEY_FILE} does not exist")
    _dev_secret("run_events_key")
RECONCILE_EVERY_S = env.integer("RECONCILE_EVERY_S", 10, 1)
# Where ServerApps post run events: the portal as the SuperLink's container reaches it (an
# internal address in production), the public address by default.
RUN_EVENTS_BASE_URL = (env.url("RUN_EVENTS_BASE_URL", None, ("http", "https")) or "").rstrip("/")
# Runs submitted to the SuperLink at once; later ones wait as "queued" behind them.
MAX_ACTIVE_RUNS = env.integer("MAX_ACTIVE_RUNS", 4, 1)
CELERY_BEAT_SCHEDULE = {
    "reconcile-runs": {"task": "portal.studies.tasks.reconcile_runs", "schedule": float(RECONCILE_EVERY_S),
                       "options": {"expires": float(RECONCILE_EVERY_S)}},
    "reconcile-node-keys": {"task": "portal.nodes.tasks.reconcile_node_keys", "schedule": 30.0,
                            "options": {"expires": 30.0}},
    "reconcile-grids": {"task": "portal.experiments.tasks.reconcile_grids", "schedule": float(RECONCILE_EVERY_S),
                        "options": {"expires": float(RECONCILE_EVERY_S)}},
}

# --- files, static, i18n ----------------------------------------------------------------------
MEDIA_ROOT = Path(env.string("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
# Django chmods stored files (synthetic cohorts) to these, whatever the umask.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
# --- encryption at rest -----------------------------------------------------------------------
# Synthetic cohorts (media), run folders and the local MLflow artifact store are encrypted at rest
# (fedhaem_kernel.atrest: AES-256-GCM per file, its data key wrapped by a key-encryption key).
# Keys: FEDHAEM_AT_REST_KEYS (a JSON keyring in the environment; read-only) or the key file
# FEDHAEM_AT_REST_KEYS_FILE (default var/secrets/at_rest_keys.json, generated at first start in
# development; `manage.py rotate_at_rest_keys` adds keys to it). See SECURITY.md.
AT_REST_ENCRYPTION = env.boolean("FEDHAEM_AT_REST_ENCRYPTION", True)
AT_REST_KEYS = env.string("FEDHAEM_AT_REST_KEYS")
AT_REST_KEYS_FILE = Path(env.string("FEDHAEM_AT_REST_KEYS_FILE", "") or (VAR_DIR / "secrets" / "at_rest_keys.json"))
if AT_REST_KEYS or AT_REST_KEYS_FILE.exists():
    from fedhaem_kernel.atrest import KeyringError, LocalKeyring  # noqa: E402

    try:  # a malformed keyring stops start-up naming its source (its keys are not kept here)
        LocalKeyring.from_json(AT_REST_KEYS, "FEDHAEM_AT_REST_KEYS") if AT_REST_KEYS \
            else LocalKeyring.from_file(AT_REST_KEYS_FILE)
    except KeyringError as _exc:
        raise ImproperlyConfigured(str(_exc)) from None
elif AT_REST_ENCRYPTION:
    if PRODUCTION:
        raise ImproperlyConfigured("FEDHAEM_AT_REST_KEYS or FEDHAEM_AT_REST_KEYS_FILE (an existing key file) "
                                   "must be set in production while FEDHAEM_AT_REST_ENCRYPTION is on")
    from fedhaem_kernel.atrest import LocalKeyring  # noqa: E402

    LocalKeyring.load_or_create(AT_REST_KEYS_FILE)
STORAGES = {
    "default": {"BACKEND": "portal.core.at_rest.EncryptedFileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.string("STATIC_ROOT", str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
import plotly as _plotly  # noqa: E402  (plotly.js ships inside the Python package: no CDN)

STATICFILES_DIRS = [BASE_DIR / "static", ("vendor/plotly", Path(_plotly.__file__).parent / "package_data")]
LANGUAGE_CODE = "en-gb"
TIME_ZONE = env.string("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- security ---------------------------------------------------------------------------------
SESSION_COOKIE_SECURE = env.boolean("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env.boolean("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_SSL_REDIRECT = env.boolean("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = env.boolean("SECURE_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.boolean("BEHIND_TLS_PROXY", PRODUCTION) else None
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp 4): scripts only from the portal's own static files (no
# inline script, no eval), nothing framed, forms post to the portal or the identity provider.
# plotly.js injects <style> elements (without 'unsafe-inline' the browser test records
# style-src-elem violations from plotly.min.js), hence 'unsafe-inline' for style-src alone.
from urllib.parse import urlsplit as _urlsplit  # noqa: E402

from csp.constants import NONE as _CSP_NONE  # noqa: E402
from csp.constants import SELF as _CSP_SELF  # noqa: E402
from csp.constants import UNSAFE_INLINE as _CSP_UNSAFE_INLINE  # noqa: E402

_idp_origins = sorted({f"{u.scheme}://{u.netloc}" for u in map(_urlsplit, (
    OIDC_OP_AUTHORIZATION_ENDPOINT, OIDC_OP_LOGOUT_ENDPOINT)) if u.scheme and u.netloc})
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [_CSP_SELF],
        "script-src": [_CSP_SELF],
        "style-src": [_CSP_SELF, _CSP_UNSAFE_INLINE],
        "img-src": [_CSP_SELF, "data:", "blob:"],
        "font-src": [_CSP_SELF],
        "connect-src": [_CSP_SELF],
        "object-src": [_CSP_NONE],
        "base-uri": [_CSP_SELF],
        "frame-ancestors": [_CSP_NONE],
        # A sign-in or sign-out redirects the form's POST to the identity provider.
        "form-action": [_CSP_SELF, *_idp_origins],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.string("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
