"""Limits on what a client may send, enforced while reading, on the
production command (config/server.py for the line and headers,
config/hotpath/router.py for bodies): a header flood is refused with 431 at
the header past the limit, a body too large with 413 from its Content-Length
or as it passes the limit (nothing of it spooled), slow headers and slow
bodies with 408, and idle connections are closed.

Each test talks to one real server over raw sockets on loopback, with short
time limits so that the slow cases finish in about a second.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from django.conf import settings

from config.server import PROTOCOL
from tests.conftest import BASE_DIR, LiveServer, start_server, stop_server

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
KEEP_ALIVE = 1
# Django's DATA_UPLOAD_MAX_MEMORY_SIZE, the body limit of Django's paths.
DJANGO_MAX_BODY = 2_621_440
API_MAX_BODY = 1024 * 1024
SOCKET_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def limited(test_database_url, tmp_path_factory, _server_backends_gone):
    server = start_server(
        test_database_url,
        tmp_path_factory.mktemp("limits"),
        options=("--timeout-keep-alive", str(KEEP_ALIVE)),
        HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        API_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
    )
    yield server
    stop_server(server)


def _address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(_address(server), timeout=SOCKET_TIMEOUT)


def _read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def _error(answer: bytes) -> tuple[int, str, dict[str, str]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, json.loads(body)["error"]["code"], headers


def _head(path: str = "/healthz", *, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}".encode()


def _still_serves(server: LiveServer) -> None:
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/accounts/login/"])
def test_a_hundred_headers_pass_and_the_next_one_is_431(limited, path):
    hundred = "".join(f"X-H{i}: v\r\n" for i in range(99))  # and Host
    with _connect(limited) as sock:
        sock.sendall(_head(path, extra=hundred + "\r\n"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")

    with _connect(limited) as sock:
        # 101 headers, and the request never ends: the answer comes anyway
        # (the parser reports a header once the next line begins).
        sock.sendall(_head(path, extra=hundred + "X-One-More: v\r\nX-"))
        status, code, headers = _error(_read_answer(sock))
    assert (status, code) == (431, "headers_too_large")
    assert headers["connection"] == "close"
    _still_serves(limited)


def test_headers_past_their_bytes_are_431(limited):
    with _connect(limited) as sock:
        big = "".join(f"X-Big{i}: {'b' * 1000}\r\n" for i in range(17))
        sock.sendall(_head(extra=big + "\r\n"))  # complete, 17 KB
        status, code, _ = _error(_read_answer(sock))
    assert (status, code) == (431, "headers_too_large")


def test_one_endless_header_line_is_431(limited):
    with _connect(limited) as sock:
        sock.sendall(_head(extra="X-Endless: ") + b"a" * 40_000)
        status, code, _ = _error(_read_answer(sock))
    assert (status, code) == (431, "headers_too_large")


def test_a_long_request_target_is_414(limited):
    with _connect(limited) as sock:
        sock.sendall(f"GET /healthz?{'q' * 9000} HTTP/1.1\r\n".encode())
        status, code, _ = _error(_read_answer(sock))
    assert (status, code) == (414, "uri_too_long")


def test_a_header_flood_is_cut_off_not_parsed(limited):
    """The issue's flood: 50,000 headers (~1.1 MB) in one request. The
    server stops at the 101st header, answers and closes: the client cannot
    even send the rest (a reset), or reads the 431."""
    flood = _head("/accounts/login/") + b"".join(
        b"X-Flood-%05d: 0123456789\r\n" % i for i in range(50_000)
    )
    assert len(flood) > 1_000_000
    sent = 0
    with _connect(limited) as sock:
        try:
            while sent < len(flood):
                sent += sock.send(flood[sent : sent + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_answer(sock)
    assert sent < len(flood) or answer.startswith(b"HTTP/1.1 431 "), (sent, answer[:200])
    if answer:
        assert _error(answer)[:2] == (431, "headers_too_large")
    _still_serves(limited)


def test_headers_that_trickle_in_are_408(limited):
    with _connect(limited) as sock:
        sock.sendall(_head())
        started = time.monotonic()
        answer = b""
        # One byte every 0.1 s: each is progress, but the headers never end.
        for byte in b"X-Slow: " + b"s" * 100:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            if time.monotonic() - started > HEADER_TIMEOUT + 0.3:
                break
        answer = _read_answer(sock)
        took = time.monotonic() - started
    status, code, headers = _error(answer)
    assert (status, code) == (408, "request_timeout")
    assert headers["connection"] == "close"
    assert took < HEADER_TIMEOUT + 5


def test_a_connection_that_sends_nothing_is_closed(limited):
    with _connect(limited) as sock:
        started = time.monotonic()
        assert _read_answer(sock) == b""  # closed, not answered
    assert time.monotonic() - started < KEEP_ALIVE + 5


def test_an_idle_connection_between_requests_is_closed(limited):
    with _connect(limited) as sock:
        sock.sendall(_head(extra="\r\n"))
        started = time.monotonic()
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert time.monotonic() - started < KEEP_ALIVE + 5


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/accounts/login/", DJANGO_MAX_BODY),
        ("/admin/login/", DJANGO_MAX_BODY),
        ("/v1/events", API_MAX_BODY),
    ],
)
def test_a_declared_body_too_large_is_413_before_any_of_it_is_read(limited, path, limit):
    with _connect(limited) as sock:
        sock.sendall(_head(path, method="POST", extra=f"Content-Length: {limit + 1}\r\n\r\n"))
        status, code, headers = _error(_read_answer(sock))
    assert (status, code) == (413, "payload_too_large")
    assert headers["connection"] == "close"


def test_a_chunked_body_is_cut_off_at_the_limit(limited):
    chunk = b"a" * 65536
    with _connect(limited) as sock:
        sock.sendall(
            _head("/accounts/login/", method="POST", extra="Transfer-Encoding: chunked\r\n\r\n")
        )
        # One byte past the limit, and the body never ends (no last chunk):
        # only a cut at the limit answers.
        for _ in range(DJANGO_MAX_BODY // len(chunk)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"1\r\na\r\n")
        status, code, headers = _error(_read_answer(sock))
    assert (status, code) == (413, "payload_too_large")
    assert headers["connection"] == "close"
    _still_serves(limited)


def test_a_body_within_the_limit_is_never_spooled_to_disk():
    """The router keeps at most DATA_UPLOAD_MAX_MEMORY_SIZE of a body for
    Django, which spools to a temporary file only past FILE_UPLOAD_MAX_MEMORY_SIZE."""
    assert DJANGO_MAX_BODY == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert settings.FILE_UPLOAD_MAX_MEMORY_SIZE >= settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def test_a_body_under_the_limit_still_reaches_django(limited):
    # The sign-in form, posted without its CSRF token: Django's own 403,
    # which it can only give after reading the body the router replayed.
    answer = httpx.post(
        limited.url + "/accounts/login/",
        content=b"username=ann&password=" + b"p" * 100_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert answer.status_code == 403
    assert "CSRF" in answer.text


@pytest.mark.parametrize("path", ["/accounts/login/", "/v1/events"])
def test_a_body_that_stops_arriving_is_408_on_every_path(limited, path):
    with _connect(limited) as sock:
        sock.sendall(
            _head(path, method="POST", extra="Content-Length: 100\r\n\r\n") + b"username=a"
        )
        started = time.monotonic()
        status, code, headers = _error(_read_answer(sock))
    assert (status, code) == (408, "request_timeout")
    assert headers["connection"] == "close"
    assert time.monotonic() - started < BODY_TIMEOUT + 5


def test_the_documented_server_commands_enforce_the_limits():
    for doc in ("README.md", "docs/operations.md"):
        commands = [
            line
            for line in (BASE_DIR / doc).read_text().splitlines()
            if line.startswith(".venv/bin/uvicorn ")
        ]
        assert len(commands) == 2, doc
        assert all(f"--http {PROTOCOL} " in command for command in commands), commands
