"""Bad input through the real server: every malformed or invalid request gets
the documented status and API.md's one error shape, naming the field at fault,
and nothing reaches the database (no team, user, window or reservation rows).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from budgets.models import Budget, BudgetWindow, EndUser, Reservation, Team
from tests.conftest import assert_error, auth

CHECK = "/v1/budget/check"
RESERVE = "/v1/budget/reservations"
DECISION_PATHS = [CHECK, RESERVE]
MIB = 1024 * 1024

# A valid body that registers a new team and user and, with the org budget of
# the `budgeted` fixture, opens a window and holds money: a rejected variant
# that wrote anything at all would show in the row counts.
VALID = {
    "team": "fresh-team",
    "user": "fresh-user",
    "model": "gpt-4o",
    "estimated_cost_usd": "0.01",
}
MISSING = object()


def body_with(**changes: object) -> dict:
    body: dict = dict(VALID)
    for name, value in changes.items():
        if value is MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def post(api, path: str, key: str, content: bytes):
    headers = {**auth(key), "Content-Type": "application/json"}
    return api.post(path, content=content, headers=headers)


def post_json(api, path: str, key: str, body: object):
    # json.dumps escapes lone surrogates and writes NaN as a bare token, which
    # httpx's own encoder refuses to do.
    return post(api, path, key, json.dumps(body).encode())


def row_counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (Reservation, Team, EndUser, BudgetWindow, Budget)
    }


@pytest.fixture
def budgeted(org, make_budget):
    make_budget(org, "100")
    return org


@pytest.fixture
def nothing_written(budgeted) -> Callable[[], None]:
    """Call it after the rejected requests: asserts the row counts did not move."""
    before = row_counts()

    def check() -> None:
        assert row_counts() == before

    return check


@pytest.mark.parametrize("path", DECISION_PATHS)
def test_valid_body_writes_rows_so_the_counts_can_tell(api, budgeted, key, path):
    before = row_counts()

    response = post_json(api, path, key, VALID)

    assert response.status_code in (200, 201), response.text
    after = row_counts()
    assert after["Team"] == before["Team"] + 1
    assert after["EndUser"] == before["EndUser"] + 1
    if path == RESERVE:
        assert after["Reservation"] == before["Reservation"] + 1
        assert after["BudgetWindow"] == before["BudgetWindow"] + 1


LONG = "x" * 129
SURROGATE = "\ud800"  # cannot be stored as UTF-8 text

FIELD_CASES = [
    # team
    pytest.param({"team": 7}, "team", id="team-number"),
    pytest.param({"team": ["search"]}, "team", id="team-list"),
    pytest.param({"team": {"slug": "search"}}, "team", id="team-object"),
    pytest.param({"team": True}, "team", id="team-bool"),
    pytest.param({"team": ""}, "team", id="team-empty"),
    pytest.param({"team": LONG}, "team", id="team-129-chars"),
    pytest.param({"team": "sea\x00rch"}, "team", id="team-nul"),
    pytest.param({"team": "sea\nrch"}, "team", id="team-newline"),
    pytest.param({"team": "\x1b[31mred"}, "team", id="team-escape"),
    pytest.param({"team": "del\x7f"}, "team", id="team-del"),
    pytest.param({"team": "bad" + SURROGATE}, "team", id="team-lone-surrogate"),
    # user
    pytest.param({"user": 42}, "user", id="user-number"),
    pytest.param({"user": ["alice"]}, "user", id="user-list"),
    pytest.param({"user": {"id": "alice"}}, "user", id="user-object"),
    pytest.param({"user": LONG}, "user", id="user-129-chars"),
    pytest.param({"user": "ali\x00ce"}, "user", id="user-nul"),
    pytest.param({"user": SURROGATE}, "user", id="user-lone-surrogate"),
    # model
    pytest.param({"model": 4}, "model", id="model-number"),
    pytest.param({"model": ["gpt-4o"]}, "model", id="model-list"),
    pytest.param({"model": LONG}, "model", id="model-129-chars"),
    pytest.param({"model": "gpt\t4o"}, "model", id="model-tab"),
    # estimated_cost_usd
    pytest.param({"estimated_cost_usd": True}, "estimated_cost_usd", id="cost-true"),
    pytest.param({"estimated_cost_usd": False}, "estimated_cost_usd", id="cost-false"),
    pytest.param({"estimated_cost_usd": [1]}, "estimated_cost_usd", id="cost-list"),
    pytest.param({"estimated_cost_usd": {"usd": 1}}, "estimated_cost_usd", id="cost-object"),
    pytest.param({"estimated_cost_usd": "abc"}, "estimated_cost_usd", id="cost-abc"),
    pytest.param({"estimated_cost_usd": ""}, "estimated_cost_usd", id="cost-empty-string"),
    pytest.param({"estimated_cost_usd": "1,5"}, "estimated_cost_usd", id="cost-comma"),
    pytest.param({"estimated_cost_usd": "NaN"}, "estimated_cost_usd", id="cost-nan-string"),
    pytest.param({"estimated_cost_usd": "sNaN"}, "estimated_cost_usd", id="cost-snan-string"),
    pytest.param({"estimated_cost_usd": "Infinity"}, "estimated_cost_usd", id="cost-inf-string"),
    pytest.param({"estimated_cost_usd": "-Infinity"}, "estimated_cost_usd", id="cost-neg-inf"),
    pytest.param({"estimated_cost_usd": -1}, "estimated_cost_usd", id="cost-negative-int"),
    pytest.param({"estimated_cost_usd": -0.01}, "estimated_cost_usd", id="cost-negative"),
    pytest.param({"estimated_cost_usd": "-0.0000000001"}, "estimated_cost_usd", id="cost-neg-str"),
    pytest.param({"estimated_cost_usd": 1e30}, "estimated_cost_usd", id="cost-1e30"),
    pytest.param({"estimated_cost_usd": "1e30"}, "estimated_cost_usd", id="cost-1e30-string"),
    pytest.param({"estimated_cost_usd": 10**30}, "estimated_cost_usd", id="cost-huge-int"),
    pytest.param(
        {"estimated_cost_usd": "1e999999999999999999999"},
        "estimated_cost_usd",
        id="cost-exponent-out-of-range-string",
    ),
    pytest.param({"estimated_cost_usd": "1" * 41}, "estimated_cost_usd", id="cost-41-digits"),
    # Python's Decimal takes these; a decimal string of API.md does not (were accepted).
    pytest.param({"estimated_cost_usd": "1_000"}, "estimated_cost_usd", id="cost-underscore"),
    pytest.param({"estimated_cost_usd": "١٢"}, "estimated_cost_usd", id="cost-arabic-digits"),
    pytest.param({"estimated_cost_usd": " 1"}, "estimated_cost_usd", id="cost-leading-space"),
    pytest.param({"estimated_cost_usd": "1\n"}, "estimated_cost_usd", id="cost-newline"),
    # ttl_seconds
    pytest.param({"ttl_seconds": "60"}, "ttl_seconds", id="ttl-string"),
    pytest.param({"ttl_seconds": 1.5}, "ttl_seconds", id="ttl-float"),
    pytest.param({"ttl_seconds": 60.0}, "ttl_seconds", id="ttl-integral-float"),
    pytest.param({"ttl_seconds": True}, "ttl_seconds", id="ttl-bool"),
    pytest.param({"ttl_seconds": [60]}, "ttl_seconds", id="ttl-list"),
    pytest.param({"ttl_seconds": 0}, "ttl_seconds", id="ttl-0"),
    pytest.param({"ttl_seconds": 3601}, "ttl_seconds", id="ttl-3601"),
    pytest.param({"ttl_seconds": -5}, "ttl_seconds", id="ttl-negative"),
    pytest.param({"ttl_seconds": 10**20}, "ttl_seconds", id="ttl-huge"),
    # estimate (priced for the model, instead of estimated_cost_usd)
    pytest.param(
        {"estimated_cost_usd": MISSING, "estimate": [1200, 800]}, "estimate", id="estimate-list"
    ),
    pytest.param(
        {"estimated_cost_usd": MISSING, "estimate": "1200"}, "estimate", id="estimate-string"
    ),
    pytest.param(
        {"estimated_cost_usd": MISSING, "estimate": {}},
        "estimate.input_tokens",
        id="estimate-without-input-tokens",
    ),
    pytest.param(
        {"estimated_cost_usd": MISSING, "estimate": {"input_tokens": -1}},
        "estimate.input_tokens",
        id="estimate-negative-tokens",
    ),
    pytest.param(
        {"estimated_cost_usd": MISSING, "estimate": {"input_tokens": 10**12}},
        "estimate.input_tokens",
        id="estimate-huge-tokens",
    ),
    pytest.param(
        {"estimated_cost_usd": MISSING, "estimate": {"input_tokens": 12.5}},
        "estimate.input_tokens",
        id="estimate-fractional-tokens",
    ),
    pytest.param(
        {"estimated_cost_usd": MISSING, "estimate": {"input_tokens": "1200"}},
        "estimate.input_tokens",
        id="estimate-string-tokens",
    ),
    pytest.param(
        {"estimated_cost_usd": MISSING, "estimate": {"input_tokens": 10, "max_output_tokens": -1}},
        "estimate.max_output_tokens",
        id="estimate-negative-output-tokens",
    ),
    pytest.param(
        {
            "estimated_cost_usd": MISSING,
            "estimate": {"input_tokens": 10, "max_output_tokens": 10**12},
        },
        "estimate.max_output_tokens",
        id="estimate-huge-output-tokens",
    ),
    pytest.param(
        {"estimated_cost_usd": MISSING, "estimate": {"input_tokens": 10, "max_output_tokens": 1.5}},
        "estimate.max_output_tokens",
        id="estimate-fractional-output-tokens",
    ),
    pytest.param(
        {
            "estimated_cost_usd": MISSING,
            "model": MISSING,
            "estimate": {"input_tokens": 10, "max_output_tokens": 10},
        },
        "model",
        id="estimate-without-model",
    ),
]


@pytest.mark.parametrize("path", DECISION_PATHS)
@pytest.mark.parametrize(("changes", "field"), FIELD_CASES)
def test_invalid_field_is_422_naming_it_and_writes_nothing(
    api, key, nothing_written, path, changes, field
):
    response = post_json(api, path, key, body_with(**changes))

    assert_error(response, 422, "invalid_field", field)
    nothing_written()


def test_reservation_without_an_amount_is_422(api, key, nothing_written):
    response = post_json(api, RESERVE, key, body_with(estimated_cost_usd=MISSING))

    assert_error(response, 422, "invalid_field", "estimated_cost_usd")
    nothing_written()


def test_check_without_an_amount_is_fine(api, key, budgeted):
    # The contrast to the test above: an amount is optional for a check.
    response = post_json(api, CHECK, key, body_with(estimated_cost_usd=MISSING))

    assert response.status_code == 200, response.text
    assert response.json()["estimated_cost_usd"] == "0"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"team": LONG}, "team", id="team-129-chars"),
        pytest.param({"team": "a\x00b"}, "team", id="team-nul"),
        pytest.param({"user": "a\x1fb"}, "user", id="user-control"),
    ],
)
def test_status_query_is_validated_like_a_body(api, key, nothing_written, params, field):
    response = api.get("/v1/budget/status", params=params, headers=auth(key))

    assert_error(response, 422, "invalid_field", field)
    nothing_written()


DEEP = 100_000

MALFORMED_BODIES = [
    pytest.param(b"team=search&user=alice", id="form-encoded"),
    pytest.param(b"", id="empty"),
    pytest.param(b"   ", id="whitespace"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'[{"team": "search", "estimated_cost_usd": "1"}]', id="array-of-object"),
    pytest.param(b'"search"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b"true", id="bool"),
    pytest.param(b'{"team": "search", "estimated_cost_usd": "0.0', id="truncated"),
    pytest.param(b"{'team': 'search'}", id="single-quotes"),
    pytest.param(b'{"team": "search",}', id="trailing-comma"),
    pytest.param(b'{"estimated_cost_usd": NaN}', id="bare-nan"),
    pytest.param(b'{"estimated_cost_usd": Infinity}', id="bare-infinity"),
    pytest.param(b'{"estimated_cost_usd": -Infinity}', id="bare-minus-infinity"),
    pytest.param(b'{"ttl_seconds": NaN, "estimated_cost_usd": "1"}', id="bare-nan-ttl"),
    pytest.param(b'{"team": "\xff\xfe"}', id="invalid-utf8"),
    pytest.param(b'{"estimated_cost_usd": 1e999999999999999999999}', id="number-out-of-range"),
    pytest.param(b'{"estimated_cost_usd": 1' + b"0" * 5000 + b"}", id="int-of-5000-digits"),
    pytest.param(b"[" * DEEP, id="deep-arrays"),
    pytest.param(b'{"a":' * DEEP, id="deep-objects"),
    pytest.param(b'{"team": ' + b"[" * DEEP + b"]" * DEEP + b"}", id="deep-closed-arrays"),
    # A repeated name: parsers differ on which value wins (the last one did).
    pytest.param(
        b'{"team": 5, "team": "fresh-team", "estimated_cost_usd": "1"}', id="repeated-name"
    ),
    pytest.param(
        b'{"estimate": {"input_tokens": -1, "input_tokens": 5}, "model": "m"}',
        id="repeated-nested-name",
    ),
]


@pytest.mark.parametrize("path", DECISION_PATHS)
@pytest.mark.parametrize("content", MALFORMED_BODIES)
def test_malformed_body_is_400_not_500(api, key, nothing_written, path, content):
    response = post(api, path, key, content)

    assert_error(response, 400, "malformed_json")
    nothing_written()


def padded_body(size: int) -> bytes:
    """A valid body of exactly `size` bytes (an ignored field pads it)."""
    empty = json.dumps({**VALID, "pad": ""}).encode()
    body = json.dumps({**VALID, "pad": "x" * (size - len(empty))}).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("path", DECISION_PATHS)
def test_body_of_exactly_one_mib_is_accepted(api, key, budgeted, path):
    response = post(api, path, key, padded_body(MIB))

    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("path", DECISION_PATHS)
@pytest.mark.parametrize("size", [MIB + 1, 2 * MIB])
def test_body_over_one_mib_is_413(api, key, nothing_written, path, size):
    response = post(api, path, key, padded_body(size))

    assert_error(response, 413, "payload_too_large")
    nothing_written()


@pytest.mark.parametrize("path", DECISION_PATHS)
def test_chunked_body_over_one_mib_is_413(api, key, nothing_written, path):
    # No Content-Length: the server has to count while it reads.
    body = padded_body(2 * MIB)
    chunks = (body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024))
    headers = {**auth(key), "Content-Type": "application/json"}

    response = api.post(path, content=chunks, headers=headers)

    assert_error(response, 413, "payload_too_large")
    nothing_written()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", CHECK),
        ("PUT", CHECK),
        ("GET", RESERVE),
        ("DELETE", RESERVE),
        ("GET", "/v1/budget/reservations/6f1c5f3e-8a59-4f0b-9a59-000000000000/release"),
        ("POST", "/v1/budget/status"),
        ("POST", "/v1/budgets"),
        ("POST", "/v1/budgets/team/search/day"),
    ],
)
def test_wrong_method_on_a_known_route_is_405_in_the_error_shape(
    api, key, nothing_written, method, path
):
    response = api.request(method, path, headers=auth(key))

    assert_error(response, 405, "method_not_allowed")
    nothing_written()


@pytest.mark.parametrize(
    "path",
    ["/v1/budget/nothing-here", "/v1/nothing", "/v1/budgets/team/a%2Fb/day", "/v1/budgets//x/day"],
)
def test_unknown_route_under_v1_is_404_in_the_error_shape(api, key, path):
    # Django answers these; it sent an HTML page.
    response = api.post(path, headers=auth(key), json=VALID)

    assert_error(response, 404, "not_found")


# --- Managing budgets -----------------------------------------------------------------

BUDGET_BODY_CASES = [
    pytest.param({}, "limit_usd", id="limit-missing"),
    pytest.param({"limit_usd": None}, "limit_usd", id="limit-null"),
    pytest.param({"limit_usd": "-1"}, "limit_usd", id="limit-negative-string"),
    pytest.param({"limit_usd": -0.5}, "limit_usd", id="limit-negative"),
    pytest.param({"limit_usd": "abc"}, "limit_usd", id="limit-abc"),
    pytest.param({"limit_usd": True}, "limit_usd", id="limit-bool"),
    pytest.param({"limit_usd": "NaN"}, "limit_usd", id="limit-nan"),
    pytest.param({"limit_usd": "1e30"}, "limit_usd", id="limit-1e30"),
    pytest.param({"limit_usd": "50", "soft_limit_pct": 101}, "soft_limit_pct", id="soft-101"),
    pytest.param({"limit_usd": "50", "soft_limit_pct": -1}, "soft_limit_pct", id="soft-negative"),
    pytest.param({"limit_usd": "50", "soft_limit_pct": "x"}, "soft_limit_pct", id="soft-x"),
    pytest.param({"limit_usd": "50", "soft_limit_pct": 50.5}, "soft_limit_pct", id="soft-float"),
    pytest.param({"limit_usd": "50", "soft_limit_pct": True}, "soft_limit_pct", id="soft-bool"),
    pytest.param({"limit_usd": "50", "enforce": "yes"}, "enforce", id="enforce-yes"),
    pytest.param({"limit_usd": "50", "enforce": 1}, "enforce", id="enforce-1"),
    pytest.param({"limit_usd": "50", "enforce": "true"}, "enforce", id="enforce-string"),
]


@pytest.mark.parametrize(("body", "field"), BUDGET_BODY_CASES)
def test_put_budget_with_bad_body_is_422_and_writes_nothing(
    api, admin_key, nothing_written, body, field
):
    # `search` is not registered yet: a rejected PUT must not register it either.
    response = api.put("/v1/budgets/team/search/day", json=body, headers=auth(admin_key))

    assert_error(response, 422, "invalid_field", field)
    nothing_written()


BUDGET_PATH_CASES = [
    pytest.param("/v1/budgets/galaxy/acme/day", "scope", id="scope-galaxy"),
    pytest.param("/v1/budgets/ORG/acme/day", "scope", id="scope-upper-case"),
    pytest.param("/v1/budgets/org/acme/year", "period", id="period-year"),
    pytest.param("/v1/budgets/team/search/hourly", "period", id="period-hourly"),
    pytest.param(f"/v1/budgets/team/{LONG}/day", "id", id="id-129-chars"),
    pytest.param("/v1/budgets/team/sea%00rch/day", "id", id="id-nul"),
    pytest.param("/v1/budgets/user/ali%0Ace/day", "id", id="id-newline"),
]


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize(("path", "field"), BUDGET_PATH_CASES)
def test_budget_path_with_bad_part_is_422_and_writes_nothing(
    api, admin_key, nothing_written, method, path, field
):
    response = api.request(method, path, headers=auth(admin_key), json={"limit_usd": "50"})

    assert_error(response, 422, "invalid_field", field)
    nothing_written()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"[50]", id="array"),
        pytest.param(b'{"limit_usd": "50"', id="truncated"),
        pytest.param(b'{"limit_usd": NaN}', id="bare-nan"),
    ],
)
def test_put_budget_with_malformed_body_is_400(api, admin_key, nothing_written, content):
    headers = {**auth(admin_key), "Content-Type": "application/json"}

    response = api.put("/v1/budgets/team/search/day", content=content, headers=headers)

    assert_error(response, 400, "malformed_json")
    nothing_written()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param("team=caf%E9", "team", id="latin-1-escape"),
        pytest.param("team=%FF%FE", "team", id="not-utf8"),
        pytest.param("user=%ED%A0%80", "user", id="encoded-surrogate"),
    ],
)
def test_query_that_is_not_utf8_is_422_not_a_replacement_character(
    api, key, nothing_written, query, field
):
    # Decoded with U+FFFD, "caf%E9" and "caf%E8" both registered team "caf\ufffd".
    response = api.get(f"/v1/budget/status?{query}", headers=auth(key))

    assert_error(response, 422, "invalid_field", field)
    nothing_written()


def test_query_in_utf8_is_read_as_utf8(api, key, budgeted):
    response = api.get("/v1/budget/status?team=caf%C3%A9", headers=auth(key))

    assert response.status_code == 200, response.text
    assert Team.objects.filter(slug="café").exists()


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
@pytest.mark.parametrize("segment", ["caf%E9", "%FF", "%C0%AF"])
def test_budget_path_that_is_not_utf8_is_422(api, admin_key, nothing_written, method, segment):
    response = api.request(
        method, f"/v1/budgets/team/{segment}/day", headers=auth(admin_key), json={"limit_usd": "5"}
    )

    assert_error(response, 422, "invalid_field", "id")
    nothing_written()


def test_release_path_that_is_not_utf8_is_404(api, key, nothing_written):
    response = api.post("/v1/budget/reservations/%FF/release", headers=auth(key))

    assert_error(response, 404, "not_found")
    nothing_written()


@pytest.fixture
def monitored(org, make_budget):
    make_budget(org, "1000000000", period="total", enforce=False)
    return org


def test_holds_past_the_largest_storable_amount_are_422_not_500(api, key, monitored):
    # A monitor-only budget never denies, so holds of the largest amount pile
    # up until the window's reserved (numeric(20, 10)) cannot hold them.
    body = {"team": "search", "estimated_cost_usd": "1000000000", "ttl_seconds": 3600}
    answers = [post_json(api, RESERVE, key, body) for _ in range(11)]

    assert [a.status_code for a in answers[:9]] == [201] * 9
    for answer in answers[9:]:
        assert_error(answer, 422, "invalid_field", "estimated_cost_usd")
    assert Reservation.objects.filter(status="active").count() == 9
    assert BudgetWindow.objects.get().reserved == 9 * 10**9


@pytest.fixture
def slow_server(live_server_factory):
    return live_server_factory(API_BODY_TIMEOUT_SECONDS="0.5")


def test_a_body_that_stops_arriving_is_408_not_a_hang(slow_server, key, nothing_written):
    host, port = slow_server.url.removeprefix("http://").split(":")
    body = json.dumps(VALID).encode()
    head = (
        f"POST {CHECK} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body) + 10}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)  # ten bytes short, and the connection stays open
        answer = b""
        while b"request_timeout" not in answer and (chunk := sock.recv(65536)):
            answer += chunk

    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code":"request_timeout"' in answer
    nothing_written()
