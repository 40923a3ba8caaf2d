"""ASGI entry point.

HTTP: the JSON API's hot path (budgets.api) answers its own routes and hands
every other request (admin, dashboard, login, static) to Django.
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

from budgets import views as budget_views  # noqa: E402
from budgets.api import ApiApp, route  # noqa: E402
from dashboard import consumers, summary  # noqa: E402
from tracking import catalog, ingest  # noqa: E402

ROUTES = [
    route("GET", "/healthz", budget_views.healthz, authenticated=False),
    route("GET", "/readyz", budget_views.readyz, authenticated=False),
    route("GET", "/metrics", budget_views.prometheus_metrics, authenticated=False),
    route("POST", "/v1/budget/check", budget_views.check),
    route("POST", "/v1/budget/reservations", budget_views.reserve),
    route("POST", "/v1/budget/reservations/{reservation_id}/release", budget_views.release),
    route("GET", "/v1/budget/status", budget_views.status),
    route("POST", "/v1/events", ingest.record_events),
    route("GET", "/v1/prices", catalog.prices, authenticated=False),
    route("GET", "/v1/budgets", budget_views.list_budgets),
    route("PUT", "/v1/budgets/{scope}/{subject}/{period}", budget_views.put_budget),
    route("DELETE", "/v1/budgets/{scope}/{subject}/{period}", budget_views.delete_budget),
    # An API key or a dashboard session: the handler authenticates either.
    route("GET", "/v1/dashboard/summary", summary.summary, authenticated=False),
]

http_app = ApiApp(ROUTES, fallback=ASGIStaticFilesHandler(django_asgi_app))

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "lifespan": http_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([path("ws/spend/", consumers.SpendConsumer.as_asgi())]))
        ),
    }
)
