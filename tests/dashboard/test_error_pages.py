"""Error pages in the product's look (templates/base.html): 404, 403, 500 and
the sign-in lockout, each with its status code."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.test import RequestFactory

from config.urls import server_error


def test_an_unknown_page_is_a_404_in_the_products_look(client, db):
    response = client.get("/no/such/page")

    html = response.content.decode()
    assert response.status_code == 404
    assert 'class="topbar"' in html and "dashboard/dashboard.css" in html
    assert 'data-status="404"' in html and "There is no page at <code>/no/such/page</code>" in html


def test_the_api_keeps_its_json_404(client, db):
    response = client.get("/v1/nothing-here")

    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_refusal_is_a_403_page_saying_why(client, org, make_user):
    client.force_login(make_user("vera", org=org))

    response = client.get("/dashboard/budgets/new?org=acme")

    html = response.content.decode()
    assert response.status_code == 403
    assert 'class="topbar"' in html and 'data-status="403"' in html
    assert "This login may only read this organization&#x27;s dashboard." in html
    assert "vera" in html  # signed in: the bar names the login


def test_the_500_page_needs_neither_the_database_nor_a_request_context():
    # No `db` fixture: a query would fail the test (pytest-django blocks it).
    response = server_error(RequestFactory().get("/somewhere"))

    html = response.content.decode()
    assert response.status_code == 500
    assert 'class="topbar"' in html and 'data-status="500"' in html
    assert "Something went wrong on our side" in html


def test_the_sign_in_lockout_is_a_page_with_the_retry_time(client, db, settings):
    settings.LOGIN_FAILURES_PER_15_MINUTES = 2
    get_user_model().objects.create_user("victim", password="right-password-123")
    for _ in range(2):
        client.post("/accounts/login/", {"username": "victim", "password": "nope"})

    response = client.post(
        "/accounts/login/", {"username": "victim", "password": "right-password-123"}
    )

    html = response.content.decode()
    assert response.status_code == 429
    assert 14 * 60 < int(response["Retry-After"]) <= 15 * 60
    assert response["Content-Type"].startswith("text/html")
    assert 'class="topbar"' in html and 'data-status="429"' in html
    assert '<strong id="retry-minutes">15 minutes</strong>' in html
