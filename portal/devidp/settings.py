"""Settings of the development identity provider (a separate Django project and process)."""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from portal import env
from portal.core.private_files import private_dir, restrict_umask

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env.string("FEDHAEM_VAR_DIR", str(BASE_DIR / "var"))).resolve()
IDP_DIR = VAR_DIR / "devidp"
# Private before anything is created: the provider's database holds password hashes and tokens.
restrict_umask()
private_dir(IDP_DIR)


def _generated(path: Path, make) -> str:
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text()


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


SECRET_KEY = _generated(IDP_DIR / "django_secret_key", lambda: __import__("secrets").token_urlsafe(48))
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
PORT = env.integer("DEV_IDP_PORT", 8001, 1024, 65535)

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "oauth2_provider",
    "portal.devidp",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "portal.devidp.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [BASE_DIR / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "django.contrib.auth.context_processors.auth"]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": IDP_DIR / "idp.sqlite3",
                         "OPTIONS": {"timeout": 20}}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Its own cookie name, so the portal's and the provider's sessions on 127.0.0.1 never collide.
SESSION_COOKIE_NAME = "devidp_sessionid"
CSRF_COOKIE_NAME = "devidp_csrftoken"
LOGIN_URL = "/accounts/login/"
USE_TZ = True
TIME_ZONE = "UTC"

# Wrong passwords: this many for one username (or per address) within the window lock it out
# for DEV_IDP_LOCKOUT_S seconds (429). Keycloak's brute-force detection does this in production.
LOGIN_FAILURE_LIMIT = env.integer("DEV_IDP_LOGIN_FAILURE_LIMIT", 10, 1)
LOGIN_FAILURE_LIMIT_PER_ADDRESS = env.integer("DEV_IDP_LOGIN_FAILURE_LIMIT_PER_ADDRESS", 50, 1)
LOGIN_FAILURE_WINDOW_S = env.integer("DEV_IDP_LOGIN_FAILURE_WINDOW_S", 300, 1)
LOGIN_LOCKOUT_S = env.integer("DEV_IDP_LOCKOUT_S", 300, 1)

# A development provider for loopback demos and tests: a light hash keeps the seeded logins fast.
PASSWORD_HASHERS = ["portal.devidp.hashers.DevPBKDF2PasswordHasher"]

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": _generated(IDP_DIR / "oidc_rsa.pem", _rsa_pem),
    "PKCE_REQUIRED": True,
    "OAUTH2_VALIDATOR_CLASS": "portal.devidp.validators.DevClaimsValidator",
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    "OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT": False,
    "SCOPES": {"openid": "OpenID Connect", "profile": "Profile", "email": "E-mail"},
    "ACCESS_TOKEN_EXPIRE_SECONDS": 3600,
}
