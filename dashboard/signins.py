"""Throttling of failed sign-ins (dashboard and admin), counted in the
database so that every server process counts the same attempts.

An attempt is counted before its password is checked and forgotten with its
key's others when it succeeds (dashboard/sql/functions/20_sign_ins.sql): a
burst of parallel guesses spread over any number of processes gets exactly
LOGIN_FAILURES_PER_15_MINUTES checks per key in any 15 minutes. The key is the
client's network (config/hotpath/throttle.py: the IPv4 address, or the IPv6
/64) and the username tried, so a guesser cannot lock a user out from
elsewhere.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest

from config.hotpath.db import QUERIES
from config.hotpath.throttle import client_network

WINDOW_SECONDS = 15 * 60


def attempt_key(request: HttpRequest, username: str) -> str:
    return f"{client_network(request.META.get('REMOTE_ADDR', ''))}|{username[:150].lower()}"


def sign_in_attempt(key: str) -> float | None:
    """Count an attempt for `key`: None when its password may be checked, else
    the seconds until the key may try again (nothing counted)."""
    with connection.cursor() as cursor:
        cursor.execute(
            QUERIES["sign_in_attempt"],
            {
                "key": key,
                "limit": settings.LOGIN_FAILURES_PER_15_MINUTES,
                "window_seconds": WINDOW_SECONDS,
            },
        )
        return cursor.fetchone()[0]


def sign_in_succeeded(key: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(QUERIES["sign_in_succeeded"], {"key": key})
