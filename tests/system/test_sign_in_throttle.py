"""Failed sign-ins are throttled across server processes: two real servers
count the same attempts (dashboard/signins.py), in turn and in a parallel
burst."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.contrib.auth import get_user_model

LIMIT = 4
_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(scope="module")
def two_servers(live_server_factory):
    env = {"LOGIN_FAILURES_PER_15_MINUTES": str(LIMIT)}
    return live_server_factory(**env), live_server_factory(**env)


def _sign_in(base_url: str, path: str, username: str, password: str) -> int:
    """One sign-in through a fresh client (its own CSRF cookie), as a
    guesser spreading tries over servers would send it."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        page = client.get(path)
        token = _TOKEN.search(page.text)
        assert token is not None, page.text[:500]
        answer = client.post(
            path,
            data={"username": username, "password": password, "csrfmiddlewaretoken": token[1]},
            headers={"Referer": base_url + path},
        )
        return answer.status_code


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_failures_in_turn_on_two_servers_share_one_limit(two_servers, transactional_db, path):
    get_user_model().objects.create_superuser("victim", "", "right-password-123")
    urls = [s.url for s in two_servers]

    wrong = [_sign_in(urls[i % 2], path, "victim", f"guess-{i}") for i in range(LIMIT)]
    blocked = [_sign_in(url, path, "victim", "right-password-123") for url in urls]

    # Each server let LIMIT / 2 through: counted apart, neither would block yet.
    assert wrong == [200] * LIMIT  # the form again, with an error
    assert blocked == [429, 429]


def test_a_parallel_burst_over_two_servers_gets_exactly_the_limit(two_servers, transactional_db):
    """Every attempt is counted before its password is checked, so a burst
    cannot pass the check before the first failure is written."""
    get_user_model().objects.create_superuser("victim", "", "right-password-123")
    urls = [s.url for s in two_servers]
    tries = 16

    with ThreadPoolExecutor(tries) as pool:
        statuses = list(
            pool.map(
                lambda i: _sign_in(urls[i % 2], "/accounts/login/", "victim", f"guess-{i}"),
                range(tries),
            )
        )

    assert sorted(statuses) == [200] * LIMIT + [429] * (tries - LIMIT)


def test_a_good_sign_in_starts_the_count_afresh(two_servers, transactional_db):
    get_user_model().objects.create_user("alice", "", "right-password-123")
    a, b = (s.url for s in two_servers)

    wrong = [_sign_in(a, "/accounts/login/", "alice", "nope") for _ in range(LIMIT - 1)]
    good = _sign_in(b, "/accounts/login/", "alice", "right-password-123")
    again = [_sign_in(a, "/accounts/login/", "alice", "nope") for _ in range(LIMIT - 1)]

    assert wrong == [200] * (LIMIT - 1)
    assert good == 302  # signed in: redirected to the dashboard
    assert again == [200] * (LIMIT - 1)  # not blocked: the success reset the count
