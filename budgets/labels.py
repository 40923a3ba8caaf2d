"""The text rules of tags and model patterns, in one place: events' and
requests' `tags`, tag budgets' `name=value` subjects, model allow-lists and
budgets' model filters all follow them.

A tag is a name (1 to 64 characters of text, no control characters, no `=`)
and a value (at most 256 characters of text). A tag budget's subject is
`name=value`, split at the first `=`: names have none, values may.

A model pattern is an exact model name or a family pattern, a prefix ending
in `*` (`claude-opus-*`), stored lower-cased and matched against the name a
request or event sends, lower-cased (tollgate_model_matches, 50_holds.sql).
"""

from __future__ import annotations

import re
from typing import Any

MAX_TAGS = 20
MAX_TAG_NAME_LENGTH = 64
MAX_TAG_VALUE_LENGTH = 256
# name=value: a tag budget's subject (Budget.tag).
MAX_TAG_PAIR_LENGTH = MAX_TAG_NAME_LENGTH + 1 + MAX_TAG_VALUE_LENGTH
MAX_MODEL_PATTERN_LENGTH = 129

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MODEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9._:/@+-]{0,127}\*?")

TAG_RULE = (
    f"Tags are strings: names of 1 to {MAX_TAG_NAME_LENGTH} characters without control "
    f"characters or '=', values of at most {MAX_TAG_VALUE_LENGTH}."
)
MODEL_PATTERN_RULE = (
    "a model name or a family pattern like 'claude-opus-*' "
    "('*' only at the end, after at least one character; no spaces)"
)


def tag_problem(name: Any, value: Any) -> str | None:
    """Why (name, value) is not a tag, or None when it is one."""
    if not isinstance(name, str) or not isinstance(value, str):
        return TAG_RULE
    if not 1 <= len(name) <= MAX_TAG_NAME_LENGTH or len(value) > MAX_TAG_VALUE_LENGTH:
        return TAG_RULE
    if "=" in name or _CONTROL.search(name):
        return TAG_RULE
    if "\x00" in value or _SURROGATE.search(name + value):
        return "Tags must be valid text."
    return None


def tags_problem(value: Any) -> tuple[str | None, str] | None:
    """(the tag's name, or None for the whole object, and why) when `value`
    is not a tags object (at most MAX_TAGS tags), None when it is one."""
    if not isinstance(value, dict) or len(value) > MAX_TAGS:
        return None, f"must be an object of at most {MAX_TAGS} strings."
    for name, tag in value.items():
        problem = tag_problem(name, tag)
        if problem is not None:
            return str(name), problem
    return None


def split_tag(pair: str) -> tuple[str, str] | None:
    """`name=value` as (name, value), None when it is not a tag."""
    name, sep, value = pair.partition("=")
    if not sep or tag_problem(name, value) is not None:
        return None
    return name, value


def tag_pairs(tags: dict[str, str]) -> list[str]:
    """A tags object as the SQL functions take it: sorted `name=value` texts."""
    return sorted(f"{name}={value}" for name, value in tags.items())


def normalize_model_pattern(value: str) -> str:
    return value.strip().lower()


def is_model_pattern(value: str) -> bool:
    """Whether `value` (normalized) is a model name or family pattern."""
    return _MODEL_PATTERN.fullmatch(value) is not None
