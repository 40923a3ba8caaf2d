"""Browser-facing security: headers on HTML pages, CSRF on every form, and
production cookies (SECURE_TLS=true) that are Secure, HttpOnly and SameSite."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest

FORMS = ["/accounts/login/", "/admin/login/"]
PASSWORD = "correct-horse-battery-staple-9"


def _token(page: httpx.Response) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def _cookie(response: httpx.Response, name: str) -> str:
    """The Set-Cookie header of cookie `name`, lower-cased for flag checks."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header.lower()
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


@pytest.mark.parametrize("path", [*FORMS, "/"])
def test_html_pages_carry_security_headers(server, path):
    response = httpx.get(server.url + path, follow_redirects=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp


@pytest.mark.parametrize("path", [*FORMS, "/accounts/logout/"])
def test_forms_refuse_posts_without_a_csrf_token(server, path):
    with httpx.Client(base_url=server.url) as client:
        client.get("/accounts/login/")  # has the csrftoken cookie, sends no token
        response = client.post(path, data={"username": "ann", "password": "x"})
    assert response.status_code == 403
    assert "CSRF" in response.text


def test_sign_in_with_the_csrf_token_works(server, transactional_db, django_user_model):
    django_user_model.objects.create_user("csrf-ann", password=PASSWORD)
    with httpx.Client(base_url=server.url) as client:
        token = _token(client.get("/accounts/login/"))
        response = client.post(
            "/accounts/login/",
            data={"username": "csrf-ann", "password": PASSWORD, "csrfmiddlewaretoken": token},
        )
    assert response.status_code == 302
    assert "sessionid" in response.cookies


@pytest.fixture(scope="module")
def production_server(live_server_factory):
    return live_server_factory(
        SECURE_TLS="true",
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1",
        SECRET_KEY="x7Qe1!b9Lr2@Tz8#Wm4%Yc6^Hn0&Kp3*Fs5(Gd7)Ja9_Ub1-Vq3+Xo5=Ie",
    )


def test_production_redirects_to_https_and_sends_hsts(production_server):
    plain = httpx.get(production_server.url + "/accounts/login/")
    assert plain.status_code == 301
    assert plain.headers["location"].startswith("https://")
    # Behind the TLS proxy (X-Forwarded-Proto: https).
    page = httpx.get(
        production_server.url + "/accounts/login/", headers={"X-Forwarded-Proto": "https"}
    )
    assert page.status_code == 200
    hsts = page.headers["strict-transport-security"]
    assert "max-age=31536000" in hsts and "includesubdomains" in hsts.lower()


def test_production_cookies_are_secure_httponly_samesite(
    production_server, transactional_db, django_user_model
):
    django_user_model.objects.create_user("tls-ann", password=PASSWORD)
    origin = "https://" + urlsplit(production_server.url).netloc
    https = {"X-Forwarded-Proto": "https"}
    page = httpx.get(production_server.url + "/accounts/login/", headers=https)
    csrf_cookie = _cookie(page, "csrftoken")
    assert "; secure" in csrf_cookie and "samesite=lax" in csrf_cookie
    # The client would not send a Secure cookie over plain http: send it by hand.
    csrftoken = page.headers.get_list("set-cookie")[0].split(";")[0]
    signed_in = httpx.post(
        production_server.url + "/accounts/login/",
        headers={**https, "Origin": origin, "Cookie": csrftoken},
        data={"username": "tls-ann", "password": PASSWORD, "csrfmiddlewaretoken": _token(page)},
    )
    assert signed_in.status_code == 302, signed_in.text
    session = _cookie(signed_in, "sessionid")
    assert "; secure" in session and "; httponly" in session and "samesite=lax" in session
