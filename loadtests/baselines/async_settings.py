"""Settings of design (c) in compare.py: the async Django + async ORM baseline.

Production settings with the changes an async Django deployment needs, so
that the baseline view is reachable only when these settings are chosen
explicitly and never from config.urls.
"""

from __future__ import annotations

import os

from config.settings import *  # noqa: F403 - the baseline is production settings plus the lines below
from config.settings import DATABASES, MIDDLEWARE

ROOT_URLCONF = "loadtests.baselines.async_urls"

# Django's advice for async code: no persistent connections (each request
# runs its queries in a thread of its own, so a kept connection would belong
# to a thread that is gone) but its psycopg pool (Django >= 5.1), which lends
# a connection to a request's thread and takes it back when the request ends.
# As many connections as the sync baseline has threads (compare.py --threads).
_POOL_SIZE = int(os.environ.get("BASELINE_ASYNC_POOL_SIZE", "8"))
DATABASES = {
    "default": {
        **DATABASES["default"],
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            **DATABASES["default"].get("OPTIONS", {}),
            "pool": {"min_size": _POOL_SIZE, "max_size": _POOL_SIZE, "timeout": 10},
        },
    }
}

# config.logging.RequestIdMiddleware is sync-only; one sync-only middleware
# makes Django run the whole chain in a thread and the async view through
# async_to_sync, which would measure that adapter instead of the async ORM.
# It only tags log lines, so the async baseline goes without it.
MIDDLEWARE = [m for m in MIDDLEWARE if m != "config.logging.RequestIdMiddleware"]
