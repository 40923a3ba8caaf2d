"""Hypothesis strategies for whole hostile requests, one endpoint each.

A case starts from a valid request (fresh team and user names, so that an
accepted request would register them and show in the row digests) and
breaks it: one field gets a value from tests/fuzz/values.py, and on top the
body may be truncated, get invalid UTF-8, a repeated name, deep nesting or
hostile extra fields, or stop being an object; the key may be missing,
unknown, revoked or of the wrong kind. Each case carries the statuses API.md
allows for it and, for a 422, the field the error must name. No case is a
valid request: every one must be rejected.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import uuid
import zoneinfo
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from django.conf import settings
from hypothesis import strategies as st

from tests.fuzz import values as v
from tracking.provider_usage import (
    ANTHROPIC,
    GEMINI,
    NORMALIZED,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    PLAIN,
)


class _Missing:
    # A constant repr: hypothesis seeds a derandomized run from the strategies'
    # repr, and object()'s holds a memory address that differs between runs.
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()  # the field is left out


@functools.cache
def _pick(options: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


def pick(options: list[Any]) -> st.SearchStrategy[Any]:
    """st.sampled_from, built once per list: hypothesis checks each new strategy."""
    return _pick(tuple(options))


@dataclass(frozen=True)
class Keys:
    admin: str
    plain: str  # not admin
    team: str  # limited to team "search", not admin
    team_admin: str  # limited to team "search", admin
    revoked: str
    other_org_slug: str
    other_reservation: str  # another organization's active hold

    def __repr__(self) -> str:
        # Hypothesis derives the derandomized seed from the strategies' repr:
        # new random keys in every run must not change which cases are drawn.
        return "Keys(...)"


@dataclass
class Case:
    endpoint: str  # what the counts are grouped by
    method: str
    path: str  # percent-encoded ASCII, with the query string
    statuses: frozenset[int]
    field: str | None = None  # the field a 422 must name
    headers: dict[str, Any] = dataclasses.field(default_factory=dict)
    body: bytes | None = None
    why: str = ""

    def __repr__(self) -> str:  # hypothesis prints failing cases; bodies may be 1 MB
        return f"Case({self.describe()})"

    def describe(self) -> str:
        body = self.body if self.body is None or len(self.body) < 300 else self.body[:300] + b"..."
        return f"{self.method} {self.path[:300]} [{self.why}] headers={self.headers!r:.300} body={body!r}"


@dataclass(frozen=True)
class Verdict:
    """What the server must answer, in the order it checks things."""

    status: int
    field: str | None = None


def verdict(
    *,
    body: bytes | None,
    auth_ok: bool,
    gate: Verdict | None = None,
    malformed: bool,
    error: Verdict,
) -> Verdict:
    """Body size first (before the key), then the key, then what the route
    checks before the body (admin rights, path), then the JSON, then fields."""
    if body is not None and len(body) > v.MIB:
        return Verdict(413)
    if not auth_ok:
        return Verdict(401)
    if gate is not None:
        return gate
    if malformed:
        return Verdict(400)
    return error


# --- Headers -------------------------------------------------------------------


@st.composite
def authorization(draw, keys: Keys, good: str) -> tuple[dict[str, Any], bool]:
    """(headers, whether the key is good): mostly the good key."""
    if draw(st.integers(0, 4)) > 0:
        return {"Authorization": f"Bearer {good}"}, True
    header = draw(
        st.sampled_from(
            [
                None,
                "",
                "Bearer",
                "Basic dXNlcjpwYXNz",
                f"Token {good}",
                f"Bearer {good}x",
                f"Bearer {good[:-1]}",
                f"Bearer {keys.revoked}",
                "Bearer tg_000000000000_" + "A" * 43,
                "Bearer tg_' OR 1=1 --_x",
                "Bearer " + "A" * 8000,
                b"Bearer tg_\xff\xfe\x80_\xc3",
            ]
        )
    )
    if header is None:
        return {}, False
    return {"Authorization": header}, False


CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "application/xml",
        "application/json; charset=utf-16",
        None,
    ]
)


def with_content_type(headers: dict[str, Any], content_type: str | None) -> dict[str, Any]:
    # The server reads every body as JSON whatever it is labelled; a wrong
    # label must change nothing about the answer.
    return headers if content_type is None else {**headers, "Content-Type": content_type}


# --- Bodies ----------------------------------------------------------------------

HOSTILE_EXTRA = st.one_of(
    v.SQL_TEXT,
    v.WITH_CONTROL,
    v.WITH_SURROGATE,
    v.longer_than(1000),
    v.NOT_A_STRING,
    st.integers(1, 200).map(lambda n: v.Raw("[" * n + "]" * n)),
    st.integers(1, 200).map(lambda n: v.Raw('{"a":' * n + "0" + "}" * n)),
)
NOT_AN_OBJECT = st.sampled_from(
    [
        b"",
        b"   ",
        b"null",
        b"[]",
        b"[{}]",
        b'"{}"',
        b"42",
        b"-0",
        b"1e400",
        b"true",
        b"team=search&user=alice",
        b"<xml/>",
        b"\x00",
        b"\xef\xbb\xbf{}",  # a byte-order mark is not JSON
        b"{} {}",
        b"{}}",
        b"[" * 10_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 10_000,
    ]
)
BAD_UTF8 = st.sampled_from(
    [b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]
)
DEEP_DEPTHS = st.sampled_from([1_000, 10_000, 100_000])


@st.composite
def envelope(
    draw, body: dict[str, Any], mutated: str | None, base: dict[str, Any]
) -> tuple[bytes, bool, str]:
    """The body as bytes, maybe broken as a whole: (bytes, malformed, how)."""
    kind = draw(
        st.sampled_from(
            ["plain"] * 5
            + ["extra", "duplicate", "deep", "truncate", "bad_utf8", "array", "not_object"]
        )
    )
    if kind == "extra":
        # Prefixed: an extra name must never be one of the fields.
        name = "x-" + draw(st.one_of(v.SAFE_TEXT, v.WITH_CONTROL, v.WITH_SURROGATE))
        body = {**body, name: draw(HOSTILE_EXTRA)}
    if kind == "duplicate":
        # The valid value last: a parser that keeps the last value sees a
        # valid request. Repeated names are refused as a whole (400).
        names = [n for n in base if n in body]
        if mutated in names and draw(st.booleans()):
            name = mutated
        else:
            name = draw(st.sampled_from(names))
        pairs = (*tuple(body.items()), (name, base[name]))
        text = v.encode(v.Pairs(pairs))
        return text.encode("utf-8", "surrogatepass"), True, f"duplicate {name!r}"
    if kind == "deep":
        depth = draw(DEEP_DEPTHS)
        nest = draw(pick(["[" * depth + "]" * depth, '{"a":' * depth + "0" + "}" * depth]))
        body = {**body, "nest": v.Raw(nest, malformed=True)}
    text, malformed = v.encode_checked(body)
    text = text.encode("utf-8", "surrogatepass")
    if kind == "truncate":
        cut = draw(st.integers(0, len(text) - 1))
        return text[:cut], True, f"truncated at {cut}"
    if kind == "bad_utf8":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(BAD_UTF8) + text[at:], True, f"invalid UTF-8 at {at}"
    if kind == "array":
        return b"[" + text + b"]", True, "array"
    if kind == "not_object":
        return draw(NOT_AN_OBJECT), True, "not an object"
    return text, malformed, kind


# --- POST /v1/budget/check and /v1/budget/reservations ------------------------------

DECISION = {
    "team": "fresh-team",
    "user": "fresh-user",
    "model": "gpt-4o",
    "estimated_cost_usd": "0.01",
    "ttl_seconds": 60,
}


@st.composite
def bad_estimate(draw) -> tuple[Any, str, bool]:
    """(estimate, field at fault, whether to drop the model)."""
    kind = draw(pick(["type", "missing", "input", "output", "model"]))
    if kind == "type":
        return (
            draw(st.one_of(v.ODD_NUMBERS, st.booleans(), st.lists(st.integers()), v.SAFE_TEXT)),
            "estimate",
            False,
        )
    if kind == "missing":
        return (
            draw(st.sampled_from([{}, {"max_output_tokens": 5}, {"input_tokens": None}])),
            "estimate.input_tokens",
            False,
        )
    if kind == "input":
        return {"input_tokens": draw(v.bad_integer(0, 10**9))}, "estimate.input_tokens", False
    if kind == "output":
        return (
            {"input_tokens": 10, "max_output_tokens": draw(v.bad_integer(0, 10**9))},
            "estimate.max_output_tokens",
            False,
        )
    return {"input_tokens": 10, "max_output_tokens": 10}, "model", True


@st.composite
def decision_case(draw, keys: Keys, path: str, endpoint: str) -> Case:
    body = dict(DECISION)
    key = draw(pick([keys.admin, keys.plain]))
    name = draw(
        st.sampled_from(
            ["team", "user", "model", "estimated_cost_usd", "estimate", "ttl_seconds", "team_key"]
        )
    )
    error = Verdict(422, name)
    if name in ("team", "user", "model"):
        body[name] = draw(v.bad_identifier())
    elif name == "estimated_cost_usd":
        body[name] = draw(v.bad_money())
    elif name == "estimate":
        del body["estimated_cost_usd"]
        body["estimate"], at_fault, drop_model = draw(bad_estimate())
        if drop_model:
            del body["model"]
        error = Verdict(422, at_fault)
    elif name == "ttl_seconds":
        body[name] = draw(v.bad_integer(1, 3600))
    else:  # a team-limited key acting for another team
        key = keys.team
        body["team"] = draw(pick(["other-team", *v.SQL]))
        error = Verdict(403, "team")
    content, malformed, how = draw(envelope(body, name, DECISION))
    headers, auth_ok = draw(authorization(keys, key))
    outcome = verdict(body=content, auth_ok=auth_ok, malformed=malformed, error=error)
    return Case(
        endpoint,
        "POST",
        path,
        frozenset({outcome.status}),
        outcome.field,
        with_content_type(headers, draw(CONTENT_TYPES)),
        content,
        f"{name}; {how}",
    )


# --- POST /v1/events ---------------------------------------------------------------

EVENT = {
    "id": "fz-0",
    "team": "fresh-team",
    "user": "fresh-user",
    "model": "tg-plain",
    "provider": "openai",
    "usage": {"input_tokens": 1000, "output_tokens": 100},
    "cost_usd": "0.002",
    "latency_ms": 812,
    "status": "ok",
    "started_at": "2026-03-10T12:00:00Z",
    "tags": {"feature": "fuzz"},
}
KNOWN_USAGE = OPENAI_CHAT | OPENAI_RESPONSES | ANTHROPIC | GEMINI | NORMALIZED | PLAIN
USAGE_TEMPLATES = [
    ({"prompt_tokens": 100, "completion_tokens": 20}, ["prompt_tokens", "completion_tokens"]),
    (
        {"input_tokens": 100, "output_tokens": 20, "input_tokens_details": {"cached_tokens": 1}},
        ["input_tokens", "output_tokens"],
    ),
    (
        {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 5},
        ["input_tokens", "output_tokens", "cache_read_input_tokens"],
    ),
    (
        {"promptTokenCount": 100, "candidatesTokenCount": 20},
        ["promptTokenCount", "candidatesTokenCount"],
    ),
    ({"input_tokens": 100, "cache_read_tokens": 20}, ["input_tokens", "cache_read_tokens"]),
]
NOT_A_DICT = st.one_of(
    v.ODD_NUMBERS, st.booleans(), st.lists(st.integers(), max_size=3), v.SAFE_TEXT
)


@st.composite
def bad_usage(draw) -> tuple[Any, str]:
    """(usage, the field at fault below the event)."""
    kind = draw(pick(["type", "unknown", "count", "details", "detail_count", "part"]))
    if kind == "type":
        return draw(NOT_A_DICT), "usage"
    if kind == "unknown":
        names = draw(
            st.lists(
                v.SAFE_TEXT.filter(lambda k: k not in KNOWN_USAGE),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        return {n: draw(st.integers(0, 10)) for n in names}, f"usage.{sorted(names)[0]}"
    if kind == "count":
        template, names = draw(st.sampled_from(USAGE_TEMPLATES))
        name = draw(st.sampled_from(names))
        return {**template, name: draw(v.bad_integer(0, 10**12))}, f"usage.{name}"
    if kind == "details":
        return {
            "prompt_tokens": 10,
            "prompt_tokens_details": draw(NOT_A_DICT),
        }, "usage.prompt_tokens_details"
    if kind == "detail_count":
        return (
            {
                "output_tokens": 10,
                "output_tokens_details": {"reasoning_tokens": draw(v.bad_integer(0, 10**12))},
            },
            "usage.output_tokens_details.reasoning_tokens",
        )
    total = draw(st.integers(0, 10**6))
    part = total + draw(st.integers(1, 10**6))
    if draw(st.booleans()):
        return (
            {"prompt_tokens": total, "prompt_tokens_details": {"cached_tokens": part}},
            "usage.prompt_tokens_details.cached_tokens",
        )
    return {
        "promptTokenCount": total,
        "cachedContentTokenCount": part,
    }, "usage.cachedContentTokenCount"


TAG_NAMES = st.text(alphabet="abcdefghij", min_size=1, max_size=8)
TAG_VALUES = st.text(alphabet="abcdefghij klmno", max_size=20)


@st.composite
def bad_tags(draw) -> tuple[Any, str]:
    """(tags, the field at fault below the event, before the 200-char cut)."""
    kind = draw(pick(["type", "many", "value_type", "value_long", "value_text", "name"]))
    if kind == "type":
        return draw(NOT_A_DICT), "tags"
    valid = draw(st.dictionaries(TAG_NAMES, TAG_VALUES, max_size=3))
    if kind == "many":
        many = draw(st.dictionaries(TAG_NAMES, TAG_VALUES, min_size=21, max_size=25))
        return many, "tags"
    if kind == "name":
        # "=" would make a tag budget's name=value ambiguous.
        name = draw(
            st.one_of(
                st.just(""), st.just("a=b"), v.longer_than(64), v.WITH_CONTROL, v.WITH_SURROGATE
            )
        )
        return {**valid, name: "v"}, f"tags.{name}"
    if kind == "value_type":
        value = draw(st.one_of(st.none(), v.ODD_NUMBERS, st.booleans(), v.CONTAINERS))
    elif kind == "value_long":
        value = draw(v.longer_than(256))
    else:
        value = draw(st.one_of(v.around(st.just("\x00")), v.WITH_SURROGATE))
    return {**valid, "zz_bad": value}, "tags.zz_bad"


def _not_a_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return True
    return False


BAD_RESERVATION_IDS = st.one_of(
    v.ODD_NUMBERS,
    # str() of this number is 32 hex digits: a UUID, but not a string.
    st.just(12345678901234567890123456789012),
    st.booleans(),
    v.CONTAINERS,
    v.SQL_TEXT,
    v.WITH_CONTROL,
    v.SAFE_TEXT.filter(_not_a_uuid),
    st.sampled_from(
        ["", "00000000-0000-0000-0000-00000000000g", "12345678-1234-1234-1234-1234567890123"]
    ),
    v.MALFORMED_TOKENS,
)

EVENT_FIELDS = [
    "id",
    "team",
    "user",
    "model",
    "provider",
    "usage",
    "cost_usd",
    "latency_ms",
    "status",
    "started_at",
    "reservation_id",
    "tags",
    "team_key",
]


@st.composite
def bad_event(draw, event_id: str) -> tuple[dict[str, Any], str, int]:
    """(event, field at fault, status): one field of a valid event broken."""
    event = {**EVENT, "id": event_id}
    name = draw(st.sampled_from(EVENT_FIELDS))
    at_fault, status = name, 422
    if name in ("id", "model"):
        value = draw(st.one_of(v.bad_identifier(), st.just(None), st.just(MISSING)))
    elif name in ("team", "user"):
        value = draw(v.bad_identifier())
    elif name == "provider":
        value = draw(st.one_of(v.bad_identifier(64), st.integers(65, 128).map(lambda n: "p" * n)))
    elif name == "usage":
        value, at_fault = draw(bad_usage())
    elif name == "cost_usd":
        value = draw(v.bad_money())
    elif name == "latency_ms":
        value = draw(v.bad_integer(0, 86_400_000))
    elif name == "status":
        value = draw(v.not_one_of(("ok", "error")))
    elif name == "started_at":
        value = draw(v.BAD_TIMES)
    elif name == "reservation_id":
        value = draw(BAD_RESERVATION_IDS)
    elif name == "tags":
        value, at_fault = draw(bad_tags())
    else:
        return {**event, "team": draw(st.sampled_from(["other-team", *v.SQL]))}, "team", 403
    if value is MISSING:
        del event[name]
    else:
        event[name] = value
    return event, at_fault, status


def _tags_field(prefix: str, at_fault: str) -> str:
    # ingest cuts a tag's field name to 200 characters (it echoes the name).
    return f"{prefix}{at_fault}"[:200] if at_fault.startswith("tags.") else f"{prefix}{at_fault}"


@st.composite
def single_event_case(draw, keys: Keys) -> Case:
    event, at_fault, status = draw(bad_event("fz-single"))
    key = keys.team if status == 403 else draw(pick([keys.admin, keys.plain]))
    content, malformed, how = draw(envelope(event, at_fault.split(".")[0], EVENT))
    headers, auth_ok = draw(authorization(keys, key))
    outcome = verdict(
        body=content,
        auth_ok=auth_ok,
        malformed=malformed,
        error=Verdict(status, _tags_field("", at_fault)),
    )
    return Case(
        "POST /v1/events (one)",
        "POST",
        "/v1/events",
        frozenset({outcome.status}),
        outcome.field,
        with_content_type(headers, draw(CONTENT_TYPES)),
        content,
        f"{at_fault}; {how}",
    )


@st.composite
def batch_case(draw, keys: Keys) -> Case:
    size = draw(st.integers(1, 12))
    events: list[Any] = [{**EVENT, "id": f"fz-{i}"} for i in range(size)]
    kind = draw(pick(["event"] * 6 + ["container", "empty", "oversized", "element", "repeat"]))
    key = draw(pick([keys.admin, keys.plain]))
    body: dict[str, Any] = {"events": events}
    if kind == "event":
        index = draw(st.integers(0, size - 1))
        events[index], at_fault, status = draw(bad_event(f"fz-{index}"))
        if status == 403:
            key = keys.team
            for i, event in enumerate(events):
                if i != index:
                    event["team"] = "search"  # the key's own team
        error = Verdict(status, _tags_field(f"events[{index}].", at_fault))
    elif kind == "container":
        body["events"] = draw(
            st.one_of(st.none(), st.just({}), v.SAFE_TEXT, v.ODD_NUMBERS, st.just(EVENT))
        )
        error = Verdict(422, "events")
    elif kind == "empty":
        body["events"] = []
        error = Verdict(422, "events")
    elif kind == "oversized":
        body["events"] = [
            {**EVENT, "id": f"fz-{i}"} for i in range(draw(st.sampled_from([1001, 1002, 2000])))
        ]
        error = Verdict(413)
    elif kind == "element":
        index = draw(st.integers(0, size - 1))
        events[index] = draw(
            st.one_of(st.none(), v.SAFE_TEXT, v.ODD_NUMBERS, st.lists(st.integers(), max_size=2))
        )
        error = Verdict(422, f"events[{index}]")
    else:  # an id repeated inside the batch
        index = draw(st.integers(1, 12))
        events.extend({**EVENT, "id": f"fz-{i}"} for i in range(size, index + 1))
        events[index] = {**events[index], "id": f"fz-{draw(st.integers(0, index - 1))}"}
        error = Verdict(422, f"events[{index}].id")
    content, malformed, how = draw(envelope(body, "events", {"events": [dict(EVENT)]}))
    headers, auth_ok = draw(authorization(keys, key))
    outcome = verdict(body=content, auth_ok=auth_ok, malformed=malformed, error=error)
    return Case(
        "POST /v1/events (batch)",
        "POST",
        "/v1/events",
        frozenset({outcome.status}),
        outcome.field,
        with_content_type(headers, draw(CONTENT_TYPES)),
        content,
        f"{kind} {error}; {how}",
    )


# --- PUT and DELETE /v1/budgets/{scope}/{id}/{period} ---------------------------------

BUDGET = {"limit_usd": "50", "soft_limit_pct": 80, "enforce": True}


def segment(text: str) -> str:
    """A path segment, percent-encoded (lone surrogates as their 3 bytes, which
    are not UTF-8)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


PATH_TEXT = st.one_of(
    st.just(""),
    v.SQL_TEXT,
    v.WITH_CONTROL,
    v.WITH_SURROGATE,
    pick([129, 500, 3000]).map(lambda n: "t" * n),
    pick(["a/b", "..", ".", "%", "%00", "\ufffd"]),
    v.SAFE_TEXT,
)
INVALID_UTF8_SEGMENTS = st.sampled_from(["%FF", "caf%E9", "%C3", "%ED%A0%80", "%C0%AF", "a%80b"])


def valid_identifier(text: str) -> bool:
    """API.md's identifier: 1-128 characters of Unicode text, no controls."""
    return 1 <= len(text) <= 128 and not any(
        ch < " " or ch == "\x7f" or "\ud800" <= ch <= "\udfff" for ch in text
    )


def routable(text: str) -> bool:
    """A path segment the router can match: not empty, no slash, no dots
    (the client resolves '.' and '..' away)."""
    return text not in ("", ".", "..") and "/" not in text


@st.composite
def budget_path(draw) -> tuple[str, Verdict | None, str]:
    """(path, the verdict on the path alone or None when it is valid, what).
    A 404 verdict: no route matches, and the API's JSON 404 answers."""
    parts = {"scope": "team", "id": "fresh-team", "period": "day"}
    which = draw(pick(["scope", "id", "period", "none", "none", "raw"]))
    encoded = {k: segment(p) for k, p in parts.items()}
    gate: Verdict | None = None
    if which in ("scope", "id", "period"):
        text = draw(PATH_TEXT)
        if which == "scope" and text in ("org", "team", "user", "key", "tag"):
            text += "s"
        if which == "period" and text in ("day", "week", "month", "total"):
            text += "s"
        encoded[which] = segment(text)
        if not routable(text):
            gate = Verdict(404)
        elif which != "id" or not valid_identifier(text):
            gate = Verdict(422, which)
        else:
            which = f"valid id {text!r}"
    elif which == "raw":
        # Percent-escapes that are not UTF-8: never a valid id.
        encoded["id"] = draw(INVALID_UTF8_SEGMENTS)
        gate = Verdict(422, "id")
    path = f"/v1/budgets/{encoded['scope']}/{encoded['id']}/{encoded['period']}"
    return path, gate, which


@st.composite
def put_budget_case(draw, keys: Keys) -> Case:
    path, gate, where = draw(budget_path())
    key = draw(pick([keys.admin] * 4 + [keys.plain, keys.team, keys.team_admin]))
    body = dict(BUDGET)
    name = draw(pick(["limit_usd", "soft_limit_pct", "enforce"]))
    if name == "limit_usd":
        value = draw(st.one_of(v.bad_money(), st.just(None), st.just(MISSING)))
    elif name == "soft_limit_pct":
        value = draw(v.bad_integer(0, 100))
    else:
        value = draw(v.bad_boolean())
    if value is MISSING:
        del body[name]
    else:
        body[name] = value
    content, malformed, how = draw(envelope(body, name, BUDGET))
    headers, auth_ok = draw(authorization(keys, key))
    if gate is not None and gate.status == 404:
        outcome = gate  # no route: nothing else is looked at
    else:
        if key in (keys.plain, keys.team):
            gate = Verdict(403)  # not an admin key: checked before the path
        elif key == keys.team_admin and gate is None:
            gate = Verdict(403)  # its own team's budgets only
        outcome = verdict(
            body=content, auth_ok=auth_ok, gate=gate, malformed=malformed, error=Verdict(422, name)
        )
    return Case(
        "PUT /v1/budgets/…",
        "PUT",
        path,
        frozenset({outcome.status}),
        outcome.field,
        with_content_type(headers, draw(CONTENT_TYPES)),
        content,
        f"path {where}, body {name}; {how}",
    )


@st.composite
def delete_budget_case(draw, keys: Keys) -> Case:
    path, gate, where = draw(budget_path())
    if gate is None:
        # A valid path: of a budget that does not exist.
        subject = draw(
            st.one_of(v.SQL_TEXT, v.SAFE_TEXT).filter(lambda s: routable(s) and valid_identifier(s))
        )
        path = f"/v1/budgets/team/{segment(subject)}/day"
        where = f"unknown budget {subject!r}"
    key = draw(pick([keys.admin] * 4 + [keys.plain, keys.team]))
    headers, auth_ok = draw(authorization(keys, key))
    if gate is not None and gate.status == 404:
        outcome = gate
    else:
        if key != keys.admin:
            gate = Verdict(403)
        outcome = verdict(
            body=None, auth_ok=auth_ok, gate=gate, malformed=False, error=Verdict(404)
        )
    return Case(
        "DELETE /v1/budgets/…",
        "DELETE",
        path,
        frozenset({outcome.status}),
        outcome.field,
        headers,
        None,
        where,
    )


# --- POST /v1/budget/reservations/{id}/release -------------------------------------


@st.composite
def release_case(draw, keys: Keys) -> Case:
    which = draw(pick(["garbage", "uuid", "other_org", "raw"]))
    if which == "garbage":
        text = draw(PATH_TEXT.filter(routable))
        reservation = segment(text)
    elif which == "uuid":
        reservation = str(draw(st.uuids()))
    elif which == "raw":
        reservation = draw(INVALID_UTF8_SEGMENTS)
    else:
        reservation = keys.other_reservation
    body = draw(st.one_of(st.none(), NOT_AN_OBJECT, st.binary(max_size=64)))
    headers, auth_ok = draw(authorization(keys, draw(pick([keys.admin, keys.plain, keys.team]))))
    outcome = verdict(body=body, auth_ok=auth_ok, malformed=False, error=Verdict(404))
    return Case(
        "POST /v1/budget/reservations/{id}/release",
        "POST",
        f"/v1/budget/reservations/{reservation}/release",
        frozenset({outcome.status}),
        None,
        headers,
        body,
        which,
    )


# --- POST /v1/budget/reservations/{id}/extend --------------------------------------

BAD_TTLS = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=3601),
    st.text(max_size=8),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def extend_case(draw, keys: Keys) -> Case:
    """Unknown, malformed and other orgs' ids with absent, malformed and
    out-of-range bodies: the id is read before the body (a malformed id is
    404 whatever the body), then the body (blank is `{}`), then ttl_seconds."""
    which = draw(pick(["garbage", "uuid", "other_org", "raw"]))
    if which == "garbage":
        reservation = segment(draw(PATH_TEXT.filter(routable)))
    elif which == "uuid":
        reservation = str(draw(st.uuids()))
    elif which == "raw":
        reservation = draw(INVALID_UTF8_SEGMENTS)
    else:
        reservation = keys.other_reservation
    kind = draw(pick(["none", "not_an_object", "bad_ttl"]))
    error = Verdict(404)
    if kind == "none":
        body = None
    elif kind == "not_an_object":
        body = draw(NOT_AN_OBJECT)
    else:
        body = json.dumps({"ttl_seconds": draw(BAD_TTLS)}).encode()
        error = Verdict(422, "ttl_seconds")
    malformed = kind == "not_an_object" and bool(body.strip())
    gate = Verdict(404) if which in ("garbage", "raw") else None
    headers, auth_ok = draw(authorization(keys, draw(pick([keys.admin, keys.plain, keys.team]))))
    outcome = verdict(body=body, auth_ok=auth_ok, gate=gate, malformed=malformed, error=error)
    return Case(
        "POST /v1/budget/reservations/{id}/extend",
        "POST",
        f"/v1/budget/reservations/{reservation}/extend",
        frozenset({outcome.status}),
        outcome.field,
        headers,
        body,
        f"{which}, {kind}",
    )


# --- GET endpoints: bad query strings ------------------------------------------------


def query_value(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


QUERY_IDENTIFIERS = st.one_of(
    pick([129, 1000, 4000]).map(lambda n: "u" * n),
    v.WITH_CONTROL,
    v.WITH_SURROGATE,
)
NOISE = st.lists(
    st.tuples(
        st.one_of(v.SAFE_TEXT, v.SQL_TEXT, pick(["from", "range", "org", "format", "x"])),
        st.one_of(v.SAFE_TEXT, v.SQL_TEXT, v.WITH_CONTROL),
    ),
    max_size=4,
)


def query_case(name: str, target: str, outcome: Any, headers: dict[str, str], why: str) -> Case:
    """A GET with a query: a target longer than the server reads is refused
    before anything else (414, config/server.py); otherwise `outcome`."""
    if len(target.encode()) > settings.HTTP_MAX_REQUEST_LINE_BYTES:
        return Case(name, "GET", target, frozenset({414}), None, headers, None, why)
    return Case(name, "GET", target, frozenset({outcome.status}), outcome.field, headers, None, why)


def query_string(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{query_value(k)}={query_value(val)}" for k, val in pairs)


@st.composite
def status_case(draw, keys: Keys) -> Case:
    name = draw(pick(["team", "user", "team_key", "raw"]))
    noise = [(k, val) for k, val in draw(NOISE) if k not in ("team", "user")]
    key = draw(pick([keys.admin, keys.plain]))
    if name == "team_key":
        key = keys.team
        pairs = [*noise, ("team", draw(pick(["other-team", *v.SQL])))]
        error = Verdict(403, "team")
        qs = query_string(pairs)
    elif name == "raw":
        # Not UTF-8 once decoded: never a valid name.
        target = draw(pick(["team", "user"]))
        qs = query_string(noise) + f"&{target}=" + draw(INVALID_UTF8_SEGMENTS)
        error = Verdict(422, target)
    else:
        pairs = list(noise)
        if draw(st.booleans()):
            pairs.append((name, "valid-first"))  # the last value counts
        pairs.append((name, draw(QUERY_IDENTIFIERS)))
        error = Verdict(422, name)
        qs = query_string(pairs)
    headers, auth_ok = draw(authorization(keys, key))
    outcome = verdict(body=None, auth_ok=auth_ok, malformed=False, error=error)
    return Case(
        "GET /v1/budget/status",
        "GET",
        f"/v1/budget/status?{qs}",
        frozenset({outcome.status}),
        outcome.field,
        headers,
        None,
        name,
    )


NOT_TIMES = st.one_of(
    st.sampled_from(
        [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-30",
            "2026-03-10T25:00:00Z",
            "2026-03-10T12:00:00+99:00",
            "2026-03-10T12:00:00Z\x00",
            "2026-03-10\x00garbage",
            "٢٠٢٦-03-10",
            "9999-99-99",
        ]
    ),
    v.SQL_TEXT,
    v.around(st.just("x")),
)


ZONES = zoneinfo.available_timezones()


@st.composite
def usage_case(draw, keys: Keys) -> Case:
    name = draw(
        st.sampled_from(
            [
                "from",
                "to",
                "granularity",
                "format",
                "group_by",
                "time_zone",
                "range",
                "order",
                "many",
            ]
        )
    )
    pairs: list[tuple[str, str]] = []
    error = Verdict(422, name)
    if name in ("from", "to"):
        pairs = [(name, draw(NOT_TIMES))]
    elif name in ("granularity", "format"):
        choices = ("hour", "day") if name == "granularity" else ("json", "csv")
        pairs = [
            (
                name,
                draw(
                    st.one_of(v.SAFE_TEXT, v.WITH_CONTROL, v.SQL_TEXT).filter(
                        lambda s: s and s not in choices
                    )
                ),
            )
        ]
    elif name == "group_by":
        part = draw(
            st.one_of(v.SAFE_TEXT, v.SQL_TEXT, v.WITH_CONTROL).filter(
                lambda s: "," not in s and s.strip() and s.strip() not in ("team", "user", "model")
            )
        )
        pairs = [(name, draw(pick(["", "team,", "model,user,"])) + part)]
    elif name == "time_zone":
        # Not a zone: no name of zoneinfo's list, no path (posix/… and
        # right/… zones load but are not listed), not empty (the default).
        pairs = [
            (
                name,
                draw(
                    st.one_of(v.SAFE_TEXT, v.WITH_CONTROL, v.SQL_TEXT).filter(
                        lambda s: s and "/" not in s and s not in ZONES
                    )
                ),
            )
        ]
    elif name == "range":  # wider than 366 days
        pairs = [("from", draw(pick(["0001-01-01", "1999-01-01T00:00:00Z", "2020-01-01"])))]
        error = Verdict(422, "to")
    elif name == "order":  # to before from
        pairs = [
            ("from", "2026-03-10T12:00:00Z"),
            (
                "to",
                draw(pick(["2026-03-10T11:00:00Z", "2026-03-10T12:00:00Z", "2000-01-01"])),
            ),
        ]
        error = Verdict(422, "to")
    else:  # more parameters than Django parses
        pairs = [(f"p{i}", "1") for i in range(draw(pick([1001, 1500, 3000])))]
        error = Verdict(400)
    headers, auth_ok = draw(authorization(keys, draw(pick([keys.admin, keys.plain, keys.team]))))
    outcome = verdict(body=None, auth_ok=auth_ok, malformed=False, error=error)
    return query_case("GET /v1/usage", f"/v1/usage?{query_string(pairs)}", outcome, headers, name)


AUDIT_TYPES = ("budget", "organization", "api_key")
NOT_TEXT = st.one_of(v.SAFE_TEXT, v.SQL_TEXT, v.WITH_CONTROL, v.WITH_SURROGATE)


@st.composite
def audit_case(draw, keys: Keys) -> Case:
    """GET /v1/audit: admin keys only (the key is checked before the query);
    a team-limited admin key reads only its team's budgets' history."""
    name = draw(
        pick(
            [
                "from",
                "to",
                "order",
                "object",
                "action",
                "limit",
                "cursor",
                "many",
                "not_admin",
                "team_key",
            ]
        )
    )
    key = keys.admin
    gate: Verdict | None = None
    pairs: list[tuple[str, str]] = []
    error = Verdict(422, name)
    if name in ("from", "to"):
        pairs = [(name, draw(NOT_TIMES))]
    elif name == "order":  # to before from
        pairs = [
            ("from", "2026-03-10T12:00:00Z"),
            ("to", draw(pick(["2026-03-10T11:00:00Z", "2000-01-01"]))),
        ]
        error = Verdict(422, "to")
    elif name == "object":
        value = draw(
            st.one_of(
                NOT_TEXT.filter(lambda s: s.partition(":")[0] not in AUDIT_TYPES),
                st.tuples(
                    pick(AUDIT_TYPES), st.one_of(v.WITH_CONTROL, st.just(""), pick(["u" * 401]))
                ).map(lambda t: f"{t[0]}:{t[1]}"),
            )
        )
        pairs = [("object", value)]
    elif name == "action":
        pairs = [("action", draw(NOT_TEXT.filter(lambda s: not re.fullmatch(r"[a-z_]{1,32}", s))))]
    elif name == "limit":
        pairs = [
            (
                "limit",
                draw(
                    st.one_of(
                        pick(
                            [
                                "0",
                                "501",
                                "-1",
                                "1e2",
                                "5.0",
                                " 5",
                                "\u0661\u0660",
                                "99999999999999999999",
                            ]
                        ),
                        v.SQL_TEXT,
                    )
                ),
            )
        ]
    elif name == "cursor":
        pairs = [
            (
                "cursor",
                draw(
                    st.one_of(
                        pick(["x", "YTE6LTE", "YTI6MQ", "YTE6", "====", "a1:5"]),
                        v.SQL_TEXT,
                        v.WITH_CONTROL,
                    )
                ),
            )
        ]
    elif name == "many":  # more parameters than Django parses
        pairs = [(f"p{i}", "1") for i in range(draw(pick([1001, 1500])))]
        error = Verdict(400)
    elif name == "not_admin":
        key = draw(pick([keys.plain, keys.team]))
        pairs = draw(NOISE)
        gate = Verdict(403)
    else:  # a team-limited admin key asking for more than its team's budgets
        key = keys.team_admin
        asked = draw(pick(["", "budget", "budget:team/other/day", "organization"]))
        pairs = [("object", asked)] if asked else []
        error = Verdict(403, "object")
    headers, auth_ok = draw(authorization(keys, key))
    outcome = verdict(body=None, auth_ok=auth_ok, gate=gate, malformed=False, error=error)
    return query_case("GET /v1/audit", f"/v1/audit?{query_string(pairs)}", outcome, headers, name)


BAD_COOKIES = st.sampled_from(
    [
        'sessionid="\\000abcdefgh"',  # an escaped NUL inside a quoted cookie
        'sessionid="abc\\012def"',
        "sessionid=" + "a" * 41,
        "sessionid=' OR 1=1 --",
        "sessionid=%00%00",
        "sessionid=abcdefghijklmnopqrstuvwxyz012345",
        "sessionid=",
        "other=1",
    ]
)


@st.composite
def summary_case(draw, keys: Keys) -> Case:
    name = draw(pick(["range", "team", "org", "other_org", "unknown_team", "team_key", "cookie"]))
    key = draw(pick([keys.admin, keys.plain]))
    query_error: Verdict | None = None
    error = Verdict(422, name)
    pairs: list[tuple[str, str]] = []
    if name == "range":
        pairs = [
            (
                "range",
                draw(
                    st.one_of(v.SAFE_TEXT, v.SQL_TEXT, v.WITH_CONTROL).filter(
                        lambda s: s and s not in ("24h", "7d", "30d", "mtd")
                    )
                ),
            )
        ]
        query_error = error
    elif name in ("team", "org"):
        pairs = [(name, draw(QUERY_IDENTIFIERS))]
        query_error = error
    elif name == "other_org":
        pairs = [("org", keys.other_org_slug)]
        error = Verdict(403)
    elif name == "unknown_team":
        pairs = [("team", draw(pick(["no-such-team", *v.SQL])))]
        error = Verdict(404, "team")
    elif name == "team_key":
        key = keys.team
        pairs = [("team", "other-team")]
        error = Verdict(403, "team")
    headers, auth_ok = draw(authorization(keys, key))
    if name == "cookie":
        headers = {"Cookie": draw(BAD_COOKIES)}
        auth_ok = False
    path = f"/v1/dashboard/summary?{query_string(pairs)}"
    # The query is read before the caller is known.
    outcome = query_error or verdict(body=None, auth_ok=auth_ok, malformed=False, error=error)
    return Case(
        "GET /v1/dashboard/summary",
        "GET",
        path,
        frozenset({outcome.status}),
        outcome.field,
        headers,
        None,
        name,
    )


@st.composite
def prices_case(draw, keys: Keys) -> Case:
    # The catalog takes no parameters and no key: any query gets the catalog.
    pairs = draw(NOISE)
    headers: dict[str, Any] = {}
    if draw(st.booleans()):
        headers["If-None-Match"] = draw(pick(['"abc"', "*", "", 'W/"x", "y"', "' OR 1=1 --"]))
    return Case(
        "GET /v1/prices",
        "GET",
        f"/v1/prices?{query_string(pairs)}",
        frozenset({200, 304}),
        None,
        headers,
        None,
        "noise",
    )


@st.composite
def list_budgets_case(draw, keys: Keys) -> Case:
    headers, auth_ok = draw(authorization(keys, keys.plain))
    outcome = Verdict(403) if auth_ok else Verdict(401)
    pairs = draw(NOISE)
    return Case(
        "GET /v1/budgets",
        "GET",
        f"/v1/budgets?{query_string(pairs)}",
        frozenset({outcome.status}),
        None,
        headers,
        None,
        "not admin",
    )


ROUTES = [
    ("POST", "/v1/budget/check"),
    ("POST", "/v1/budget/reservations"),
    ("POST", "/v1/budget/reservations/6f1c5f3e-8a59-4f0b-9a59-000000000000/release"),
    ("POST", "/v1/budget/reservations/6f1c5f3e-8a59-4f0b-9a59-000000000000/extend"),
    ("GET", "/v1/budget/status"),
    ("POST", "/v1/events"),
    ("GET", "/v1/budgets"),
    ("PUT", "/v1/budgets/team/fresh-team/day"),
    ("GET", "/v1/dashboard/summary"),
    ("GET", "/v1/prices"),
    ("GET", "/v1/usage"),
    ("GET", "/v1/audit"),
]


@st.composite
def wrong_method_case(draw, keys: Keys) -> Case:
    method, path = draw(st.sampled_from(ROUTES))
    other = draw(
        pick(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]).filter(lambda m: m != method)
    )
    if path.startswith("/v1/budgets/") and other == "DELETE":
        other = "PATCH"
    headers, _ = draw(authorization(keys, keys.admin))
    return Case(
        f"{other} (wrong method)", other, path, frozenset({405}), None, headers, b"{}", method
    )
