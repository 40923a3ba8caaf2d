"""Every answer carries a request id: the caller's (if sane) or a new one."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize("path", ["/healthz", "/admin/login/"])
def test_request_id_is_echoed_or_made(server, path):
    given = httpx.get(server.url + path, headers={"X-Request-Id": "abc-123"})
    made = httpx.get(server.url + path)
    hostile = httpx.get(server.url + path, headers={"X-Request-Id": "x" * 65})

    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] != "x" * 65
    assert given.status_code == made.status_code == hostile.status_code == 200


def test_api_answers_carry_security_headers(server):
    response = httpx.get(server.url + "/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


def test_api_answers_say_how_long_the_server_took(server):
    answered = httpx.get(server.url + "/healthz")
    refused = httpx.post(server.url + "/v1/budget/check", json={})  # no key: 401
    assert (answered.status_code, refused.status_code) == (200, 401)
    for response in (answered, refused):
        name, _, duration = response.headers["server-timing"].partition(";dur=")
        assert name == "app"
        assert 0 < float(duration) < 1000  # milliseconds
    assert "server-timing" not in httpx.get(server.url + "/admin/login/").headers  # Django's
