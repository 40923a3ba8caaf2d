"""The adapter's settings, read from the proxy's environment.

| variable | default | meaning |
|---|---|---|
| `TOLLGATE_URL` | (required) | Tollgate's base URL |
| `TOLLGATE_API_KEY` | (required) | a gateway key of the organization |
| `TOLLGATE_TIMEOUT_MS` | 1000 | bound on each Tollgate call, retries included |
| `TOLLGATE_ON_UNAVAILABLE` | `refuse` | `refuse` or `allow` when Tollgate does not answer, or the adapter fails |
| `TOLLGATE_REFUSAL_STATUS` | 402 | the HTTP status a refused call gets |
| `TOLLGATE_TEAM_FROM` | `team_alias,team_id` | where the Tollgate team comes from (first found) |
| `TOLLGATE_USER_FROM` | `end_user` | where the Tollgate user comes from (first found) |
| `TOLLGATE_TAGS_FROM` | `request_tags,key_alias` | what becomes the event's tags |
| `TOLLGATE_DEFAULT_MAX_TOKENS` | 1024 | output tokens held for a call that sets no `max_tokens` |
| `TOLLGATE_HOLD_TTL_SECONDS` | 600 | a hold's lifetime if no hook closes it (a stream renews it every half of it) |
| `TOLLGATE_DISCONNECT_GRACE_SECONDS` | 2 | after a client leaves a stream, how long to wait for LiteLLM's partial usage before releasing |
| `TOLLGATE_FLUSH_SECONDS` | 5 | how often usage Tollgate did not take is sent again, until it takes it |

The sources (see attribution.py): `key_alias`, `team_alias`, `team_id`,
`user_id`, `end_user`, `metadata:<name>`, `tag:<name>`, and for tags also
`request_tags`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from tollgate_litellm.attribution import parse_sources

Policy = Literal["refuse", "allow"]


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    url: str
    api_key: str
    timeout_ms: int = 1000
    on_unavailable: Policy = "refuse"
    refusal_status: int = 402
    team_from: tuple[str, ...] = ("team_alias", "team_id")
    user_from: tuple[str, ...] = ("end_user",)
    tags_from: tuple[str, ...] = ("request_tags", "key_alias")
    default_max_tokens: int = 1024
    hold_ttl_seconds: int = 600
    disconnect_grace_seconds: float = 2.0
    flush_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.url or not self.api_key:
            raise SettingsError("TOLLGATE_URL and TOLLGATE_API_KEY must be set.")
        if self.on_unavailable not in ("refuse", "allow"):
            raise SettingsError("TOLLGATE_ON_UNAVAILABLE must be 'refuse' or 'allow'.")
        if not 400 <= self.refusal_status <= 599:
            raise SettingsError("TOLLGATE_REFUSAL_STATUS must be an HTTP error status (400-599).")
        if not 1 <= self.hold_ttl_seconds <= 3600:
            raise SettingsError("TOLLGATE_HOLD_TTL_SECONDS must be 1 to 3600 (Tollgate's bound).")
        if not 0 < self.flush_seconds <= 3600:
            raise SettingsError("TOLLGATE_FLUSH_SECONDS must be more than 0 and at most 3600.")
        for name, sources in (
            ("TOLLGATE_TEAM_FROM", self.team_from),
            ("TOLLGATE_USER_FROM", self.user_from),
            ("TOLLGATE_TAGS_FROM", self.tags_from),
        ):
            try:
                parse_sources(sources, tags=name == "TOLLGATE_TAGS_FROM")
            except ValueError as error:
                raise SettingsError(f"{name}: {error}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        def integer(name: str, default: int) -> int:
            raw = environ.get(name, "").strip()
            try:
                return int(raw) if raw else default
            except ValueError:
                raise SettingsError(f"{name} must be a whole number, not {raw!r}.") from None

        def number(name: str, default: float) -> float:
            raw = environ.get(name, "").strip()
            try:
                return float(raw) if raw else default
            except ValueError:
                raise SettingsError(f"{name} must be a number, not {raw!r}.") from None

        def sources(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = environ.get(name)
            if raw is None:
                return default
            return tuple(part.strip() for part in raw.split(",") if part.strip())

        policy = environ.get("TOLLGATE_ON_UNAVAILABLE", "refuse").strip()
        return cls(
            url=environ.get("TOLLGATE_URL", "").strip(),
            api_key=environ.get("TOLLGATE_API_KEY", "").strip(),
            timeout_ms=integer("TOLLGATE_TIMEOUT_MS", cls.timeout_ms),
            on_unavailable=policy,  # type: ignore[arg-type]  # checked in __post_init__
            refusal_status=integer("TOLLGATE_REFUSAL_STATUS", cls.refusal_status),
            team_from=sources("TOLLGATE_TEAM_FROM", cls.team_from),
            user_from=sources("TOLLGATE_USER_FROM", cls.user_from),
            tags_from=sources("TOLLGATE_TAGS_FROM", cls.tags_from),
            default_max_tokens=integer("TOLLGATE_DEFAULT_MAX_TOKENS", cls.default_max_tokens),
            hold_ttl_seconds=integer("TOLLGATE_HOLD_TTL_SECONDS", cls.hold_ttl_seconds),
            disconnect_grace_seconds=number(
                "TOLLGATE_DISCONNECT_GRACE_SECONDS", cls.disconnect_grace_seconds
            ),
            flush_seconds=number("TOLLGATE_FLUSH_SECONDS", cls.flush_seconds),
        )
