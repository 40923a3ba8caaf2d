"""Failed API-key checks and failed sign-ins are throttled (429)."""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth import get_user_model

from tests.conftest import auth


@pytest.fixture(scope="module")
def strict_server(live_server_factory):
    return live_server_factory(API_AUTH_FAILURES_PER_MINUTE="5")


def test_bad_keys_from_one_address_get_429(strict_server, key):
    with httpx.Client(base_url=strict_server.url) as api:
        bad = [
            api.get("/v1/budgets", headers=auth("tg_000000000000_nope")).status_code
            for _ in range(5)
        ]
        blocked = api.get("/v1/budgets", headers=auth("tg_000000000000_nope"))
        even_good = api.get("/v1/budget/status", headers=auth(key))
        health = api.get("/healthz")

    assert bad == [401] * 5
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "rate_limited"
    assert 0 < int(blocked.headers["retry-after"]) <= 60
    assert even_good.status_code == 429  # the address is blocked for the window
    assert health.status_code == 200  # unauthenticated routes are not


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_failed_sign_ins_are_limited(client, db, settings, path):
    settings.LOGIN_FAILURES_PER_15_MINUTES = 3
    from dashboard import views

    views._login_failures = None  # pick up the setting
    get_user_model().objects.create_superuser("victim", "", "right-password-123")

    wrong = [
        client.post(path, {"username": "victim", "password": "nope"}).status_code for _ in range(3)
    ]
    blocked = client.post(path, {"username": "victim", "password": "right-password-123"})

    assert wrong == [200, 200, 200]  # the form again, with an error
    assert blocked.status_code == 429
    assert "Retry-After" in blocked
    views._login_failures = None


def test_admin_sign_in_still_works(client, db):
    get_user_model().objects.create_superuser("boss2", "", "right-password-123")
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "boss2", "password": "right-password-123", "next": "/admin/"},
    )
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
