"""Django's database sessions, refusing session keys Django never issues.

A quoted cookie may escape any byte ('sessionid="\\000abc"'), and Django's
own check only asks for 8 characters; the key then reached PostgreSQL,
whose text cannot hold a NUL, and every page (the admin's sign-in too)
answered 500. A key that is not [a-z0-9] is now simply no session.
"""

from __future__ import annotations

import re

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore

VALID_KEY = re.compile(r"[a-z0-9]{8,40}")


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key: str | None) -> bool:
        return bool(key) and VALID_KEY.fullmatch(key) is not None
