"""Settings of design (b) in compare.py: the sync Django baseline.

Production settings with two changes, so that the baseline view is reachable
only when these settings are chosen explicitly and never from config.urls.
"""

from __future__ import annotations

from config.settings import *  # noqa: F403 - the baseline is production settings plus the lines below
from config.settings import DATABASES

ROOT_URLCONF = "loadtests.baselines.sync_urls"

# A sync Django app in production keeps its database connections between
# requests (one per gunicorn thread); opening one per request, as the default
# CONN_MAX_AGE=0 does, would measure connection set-up instead of the design.
DATABASES = {"default": {**DATABASES["default"], "CONN_MAX_AGE": None}}
