"""Who a LiteLLM call is charged to: LiteLLM's caller → Tollgate's team, user and tags.

A source names one thing LiteLLM knows about the call:

- `key_alias`, `team_alias`, `team_id`, `user_id`: the virtual key's, from
  LiteLLM's own database (the caller cannot choose them);
- `end_user`: the request's `user` field (the caller's word);
- `metadata:<name>`: a field of the request's `metadata` (the caller's word);
- `tag:<name>`: the value of the request tag `<name>:<value>` (the caller's word);
- `request_tags` (tags only): every request tag, `name:value` (or `name=value`)
  as `{name: value}`, a bare `name` as `{name: ""}`.

A team or user is taken from the first source of its list that has a value.
Each tag source adds one tag named after it (`{"key_alias": "prod"}`), except
`request_tags`. Let callers choose their team (`end_user`, `metadata:`, `tag:`)
only when they are trusted to: a team read from the key cannot be forged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KEY_FIELDS = ("key_alias", "team_alias", "team_id", "user_id", "end_user")
PREFIXES = ("metadata:", "tag:")
# Tollgate's bounds: ids of 1-128 characters; at most 20 tags, names of 1-64
# characters without "=" (it separates a tag budget's name=value).
MAX_ID = 128
MAX_TAGS = 20
MAX_TAG_NAME = 64


@dataclass(frozen=True)
class Caller:
    """What LiteLLM knows of a call's caller, as plain values."""

    key_alias: str | None = None
    team_alias: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    end_user: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[str] = ()


@dataclass(frozen=True)
class Attribution:
    team: str | None
    user: str | None
    tags: dict[str, str]


def parse_sources(sources: Iterable[str], *, tags: bool = False) -> tuple[str, ...]:
    """The sources, checked (raises ValueError naming a bad one)."""
    checked = []
    for source in sources:
        known = source in KEY_FIELDS or (tags and source == "request_tags")
        prefixed = any(source.startswith(p) and len(source) > len(p) for p in PREFIXES)
        if not (known or prefixed):
            choices = ", ".join((*KEY_FIELDS, "metadata:<name>", "tag:<name>"))
            raise ValueError(
                f"unknown source {source!r} (one of {choices}"
                + (", request_tags)" if tags else ")")
            )
        checked.append(source)
    return tuple(checked)


def value_of(caller: Caller, source: str) -> str | None:
    """The source's value for this caller, or None when it has none."""
    if source in KEY_FIELDS:
        raw: Any = getattr(caller, source)
    elif source.startswith("metadata:"):
        raw = caller.metadata.get(source.removeprefix("metadata:"))
    elif source.startswith("tag:"):
        raw = _tag_value(caller.tags, source.removeprefix("tag:"))
    else:
        raw = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = str(raw)
    return raw if isinstance(raw, str) and raw else None


def attribute(
    caller: Caller,
    *,
    team_from: Sequence[str],
    user_from: Sequence[str],
    tags_from: Sequence[str],
) -> Attribution:
    return Attribution(
        team=_first(caller, team_from),
        user=_first(caller, user_from),
        tags=_tags(caller, tags_from),
    )


def _first(caller: Caller, sources: Sequence[str]) -> str | None:
    for source in sources:
        value = value_of(caller, source)
        if value is not None:
            # Longer than Tollgate takes: cut rather than refuse the call over a name.
            return value[:MAX_ID]
    return None


def _tags(caller: Caller, sources: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for source in sources:
        if source == "request_tags":
            pairs = [_split(tag) for tag in caller.tags if isinstance(tag, str)]
        else:
            value = value_of(caller, source)
            pairs = [] if value is None else [(source, value)]
        for name, value in pairs:
            if len(tags) < MAX_TAGS and 1 <= len(name) <= MAX_TAG_NAME and "=" not in name:
                tags.setdefault(name, value)
    return tags


def _split(tag: str) -> tuple[str, str]:
    name, _, value = tag.partition(":" if ":" in tag else "=")
    return name.strip(), value.strip()


def _tag_value(tags: Sequence[str], name: str) -> str | None:
    for tag in tags:
        if isinstance(tag, str):
            tag_name, separator, value = tag.partition(":")
            if separator and tag_name.strip() == name:
                return value.strip()
    return None
