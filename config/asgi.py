"""ASGI entry point.

HTTP: the JSON API's hot path (config/hotpath/router.py, with each app's
handlers from its api.py) answers its own routes and hands every other
request (admin, dashboard, login, static) to Django.
WebSocket: Channels routing (live dashboard updates).

Static files (admin, dashboard) are served by Django's staticfiles handler, so
that `manage.py demo` and the tests need no collectstatic and no DEBUG; a
deployment with much traffic puts a proxy or CDN in front of /static/.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from budgets import api as budgets_api  # noqa: E402
from budgets import auth  # noqa: E402
from config import openapi  # noqa: E402
from config.hotpath.router import ApiApp, route  # noqa: E402
from dashboard import api as dashboard_api  # noqa: E402
from dashboard import consumers  # noqa: E402
from tracking import api as tracking_api  # noqa: E402

ROUTES = [
    route("GET", "/healthz", budgets_api.healthz, authenticated=False),
    route("GET", "/readyz", budgets_api.readyz, authenticated=False),
    route("GET", "/metrics", budgets_api.prometheus_metrics, authenticated=False),
    route("GET", "/v1/openapi.json", openapi.document, authenticated=False),
    route("POST", "/v1/budget/check", budgets_api.check),
    route("POST", "/v1/budget/reservations", budgets_api.reserve),
    route("POST", "/v1/budget/reservations/{reservation_id}/release", budgets_api.release),
    route("POST", "/v1/budget/reservations/{reservation_id}/extend", budgets_api.extend),
    route("GET", "/v1/budget/status", budgets_api.status),
    route("POST", "/v1/events", tracking_api.record_events),
    route("GET", "/v1/prices", tracking_api.prices, authenticated=False),
    route("GET", "/v1/budgets", budgets_api.list_budgets),
    route("PUT", "/v1/budgets/{scope}/{subject}/{period}", budgets_api.put_budget),
    route("DELETE", "/v1/budgets/{scope}/{subject}/{period}", budgets_api.delete_budget),
    # An API key or a dashboard session: the handler authenticates either.
    route("GET", "/v1/dashboard/summary", dashboard_api.summary, authenticated=False),
    route("GET", "/v1/dashboard/holds", dashboard_api.holds, authenticated=False),
]

http_app = ApiApp(
    ROUTES, fallback=ASGIStaticFilesHandler(django_asgi_app), authenticate=auth.aauthenticate
)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "lifespan": http_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([path("ws/spend/", consumers.SpendConsumer.as_asgi())]))
        ),
    }
)
