"""WSGI entry point of the sync Django baseline, for gunicorn (compare.py)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loadtests.baselines.sync_settings")
application = get_wsgi_application()
