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
    get_user_model().objects.create_superuser("victim", "", "right-password-123")

    wrong = [
        client.post(path, {"username": "victim", "password": "nope"}).status_code for _ in range(3)
    ]
    blocked = client.post(path, {"username": "victim", "password": "right-password-123"})
    other_user = client.post(path, {"username": "someone-else", "password": "nope"})

    assert wrong == [200, 200, 200]  # the form again, with an error
    assert blocked.status_code == 429
    assert 14 * 60 < int(blocked["Retry-After"]) <= 15 * 60
    assert other_user.status_code == 200  # counted per username too


def test_sign_ins_count_per_ipv6_64(client, db, settings):
    """A client has a whole /64 to pick addresses from: they count as one."""
    settings.LOGIN_FAILURES_PER_15_MINUTES = 3

    def sign_in(address: str) -> int:
        return client.post(
            "/accounts/login/", {"username": "victim", "password": "nope"}, REMOTE_ADDR=address
        ).status_code

    same_64 = [sign_in(f"2001:db8:1:2::{i:x}") for i in range(1, 5)]
    other_64 = sign_in("2001:db8:1:3::1")
    other_v4 = sign_in("198.51.100.7")

    assert same_64 == [200, 200, 200, 429]
    assert (other_64, other_v4) == (200, 200)


def test_a_spray_of_other_keys_does_not_lift_a_block(db, settings):
    """The count lives in the database with no global reset: thousands of
    other keys leave a blocked key blocked."""
    from dashboard import signins

    settings.LOGIN_FAILURES_PER_15_MINUTES = 2
    victim = "198.51.100.7|victim"
    assert [signins.sign_in_attempt(victim) for _ in range(2)] == [None, None]

    for i in range(3000):
        signins.sign_in_attempt(f"2001:db8:{i:x}::/64|victim")

    wait = signins.sign_in_attempt(victim)
    assert wait is not None and 14 * 60 < wait <= 15 * 60


def test_attempts_that_left_the_window_are_deleted(db, settings):
    from datetime import timedelta

    from django.utils import timezone

    from dashboard import signins
    from dashboard.models import SignInAttempt

    settings.LOGIN_FAILURES_PER_15_MINUTES = 2
    old = timezone.now() - timedelta(minutes=16)
    SignInAttempt.objects.bulk_create(
        [SignInAttempt(key="198.51.100.7|victim", at=old) for _ in range(150)]
    )

    assert signins.sign_in_attempt("198.51.100.7|victim") is None  # old ones do not count
    assert SignInAttempt.objects.filter(at=old).count() == 50  # 100 deleted per attempt
    signins.sign_in_attempt("203.0.113.9|other")
    assert not SignInAttempt.objects.filter(at=old).exists()


def test_admin_sign_in_still_works(client, db):
    get_user_model().objects.create_superuser("boss2", "", "right-password-123")
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "boss2", "password": "right-password-123", "next": "/admin/"},
    )
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_key_failures_count_per_network():
    from config.hotpath.throttle import client_network

    assert client_network("198.51.100.7") == "198.51.100.7"
    assert client_network("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_network("::ffff:198.51.100.7") == "198.51.100.7"
    assert client_network("unknown") == "unknown"


def test_key_failure_memory_is_bounded_without_a_global_reset():
    """Past max_keys the network that failed longest ago is dropped; a
    blocked network that keeps trying stays blocked through a spray."""
    from config.hotpath.throttle import FailureThrottle

    throttle = FailureThrottle(limit=3, window_seconds=60, max_keys=100)
    for _ in range(3):
        throttle.record_failure("attacker")
        throttle.record_failure("quiet")
    assert throttle.retry_after("quiet") is not None

    for i in range(1000):
        throttle.record_failure(f"spray-{i}")
        if i % 50 == 0:
            assert throttle.retry_after("attacker") is not None  # still trying, still blocked

    assert len(throttle) == 100
    assert throttle.retry_after("attacker") is not None
    assert throttle.retry_after("quiet") is None  # the oldest, evicted alone
    assert throttle.retry_after("spray-999") is None  # one failure: not blocked
