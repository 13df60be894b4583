"""Django settings for the registry example project.

The zero trust settings come from ``ZT_SETTINGS_JSON`` (a JSON object); the
SQLite file from ``REGISTRY_DB``; the secret key from ``DJANGO_SECRET_KEY``.
"""

import json
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

# The fallback key is for local runs only; set DJANGO_SECRET_KEY elsewhere.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "registry-dev-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "integrations.registry_django.users",
]

# The guard runs before CommonMiddleware, so that no redirect (APPEND_SLASH)
# answers a request that has not been verified.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "zt_middleware.adapters.django.ZeroTrustMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "integrations.registry_django.urls"
WSGI_APPLICATION = "integrations.registry_django.wsgi.application"
ASGI_APPLICATION = "integrations.registry_django.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("REGISTRY_DB", str(BASE_DIR / "registry.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"

# Without ZT_SETTINGS_JSON, expect an identity provider on this machine (as
# `zt demo` runs one); the middleware verifies tokens against its JWKS.
ZERO_TRUST = {
    "issuer": "http://127.0.0.1:8400",
    "audience": "registry",
    "jwks_url": "http://127.0.0.1:8400/.well-known/jwks.json",
}
if os.environ.get("ZT_SETTINGS_JSON"):
    ZERO_TRUST = json.loads(os.environ["ZT_SETTINGS_JSON"])
