"""API-key authentication: `aauthenticate` for the hot path (async pool),
`authenticate` for sync Django views (ORM).

Keys look like `tg_<lookup id>_<secret>`. The row is found by the public
lookup id and the SHA-256 of the whole key is compared in constant time.
Verified keys are cached per process for API_KEY_CACHE_SECONDS (default 30 s),
so a warm key costs no query; a revoked key stops working within that time.
While the database does not answer, a key verified before keeps its last
verified state past that time: an organization that fails open must still be
recognised during an outage (and revocation cannot be read then anyway).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from budgets.models import ApiKey, parse_key
from config.hotpath import db
from config.hotpath.errors import ApiError

_MAX_CACHED_KEYS = 10_000


@dataclass(frozen=True)
class ApiKeyInfo:
    key_id: int
    org_id: int
    org_slug: str
    strict: bool
    fail_mode: str  # "" = server default
    team_slug: str | None
    is_admin: bool
    revoked: bool

    def acting_team(self, team: str | None, field: str = "team") -> str | None:
        """The team a request acts for: a team-limited key acts for its own
        team when the request names none, and may not name another."""
        if self.team_slug is None:
            return team
        if team is not None and team != self.team_slug:
            raise ApiError(
                403, "forbidden", "This API key is limited to another team.", field=field
            )
        return self.team_slug


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message)


# sha256(full key) -> (info, monotonic expiry)
_cache: dict[str, tuple[ApiKeyInfo, float]] = {}


def _credentials(header: str | None) -> tuple[str, str]:
    """(lookup id, SHA-256 of the key) of a well-formed `Bearer` header."""
    if not header:
        raise _unauthenticated("Send an API key: 'Authorization: Bearer <key>'.")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthenticated("Send an API key: 'Authorization: Bearer <key>'.")
    lookup_id = parse_key(token)
    if lookup_id is None:
        raise _unauthenticated("Unknown API key.")
    return lookup_id, hashlib.sha256(token.encode()).hexdigest()


def _cached(digest: str) -> ApiKeyInfo | None:
    cached = _cache.get(digest)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    return None


def _remember(digest: str, info: ApiKeyInfo | None) -> ApiKeyInfo:
    if info is None:
        raise _unauthenticated("Unknown API key.")
    if len(_cache) >= _MAX_CACHED_KEYS:
        _cache.clear()
    _cache[digest] = (info, time.monotonic() + settings.API_KEY_CACHE_SECONDS)
    return info


def _active(info: ApiKeyInfo) -> ApiKeyInfo:
    if info.revoked:
        raise _unauthenticated("This API key has been revoked.")
    return info


async def aauthenticate(header: bytes | None) -> ApiKeyInfo:
    lookup_id, digest = _credentials(header.decode("latin-1") if header else None)
    info = _cached(digest)
    if info is None:
        try:
            info = _remember(digest, await _aload(lookup_id, digest))
        except db.StoreUnavailable:
            stale = _cache.get(digest)
            if stale is None:
                raise
            info = stale[0]
    return _active(info)


def authenticate(header: str | None) -> ApiKeyInfo:
    """Sync twin of aauthenticate for Django views: same keys, same cache,
    through the ORM."""
    lookup_id, digest = _credentials(header)
    info = _cached(digest) or _remember(digest, _load(lookup_id, digest))
    return _active(info)


def _load(lookup_id: str, digest: str) -> ApiKeyInfo | None:
    key = ApiKey.objects.select_related("org", "team").filter(lookup_id=lookup_id).first()
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    # Like the hot path's query: only the right secret counts as a use.
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    return ApiKeyInfo(
        key_id=key.pk,
        org_id=key.org_id,
        org_slug=key.org.slug,
        strict=key.org.strict,
        fail_mode=key.org.fail_mode,
        team_slug=key.team.slug if key.team is not None else None,
        is_admin=key.is_admin,
        revoked=key.revoked_at is not None,
    )


async def _aload(lookup_id: str, digest: str) -> ApiKeyInfo | None:
    row = await db.fetch_one("authenticate_key", {"lookup_id": lookup_id, "key_hash": digest})
    if row is None:
        return None
    key_id, key_hash, revoked_at, is_admin, org_id, org_slug, strict, fail_mode, team = row
    # The query matched the hash too; checked again so that a change to the
    # query cannot let a wrong secret through.
    if not hmac.compare_digest(key_hash, digest):
        return None
    return ApiKeyInfo(
        key_id=key_id,
        org_id=org_id,
        org_slug=org_slug,
        strict=strict,
        fail_mode=fail_mode,
        team_slug=team,
        is_admin=is_admin,
        revoked=revoked_at is not None,
    )
