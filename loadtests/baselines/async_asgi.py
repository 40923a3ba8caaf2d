"""ASGI entry point of the async Django baseline, for uvicorn (compare.py)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loadtests.baselines.async_settings")
application = get_asgi_application()
