"""Malformed HTTP framing over raw sockets, which no HTTP client will send:
Content-Length longer or shorter than the body, not a number, repeated;
chunked bodies with broken chunks; Transfer-Encoding with Content-Length;
bodies that stop arriving. Every answer is a 4xx (the API's error shape when
the request reached the API; uvicorn's own plain 400 when the framing itself
is broken), or no answer when the client hung up mid-body; never a 5xx, never
a hang, and nothing is written.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import COMPLETED, COUNTS, DOCUMENTED, snapshot

# Valid requests but for one field, so that a body read whole is a 422.
BODIES = {
    "/v1/budget/check": {"team": "fresh-team", "user": 5, "estimated_cost_usd": "1"},
    "/v1/budget/reservations": {"team": "fresh-team", "estimated_cost_usd": "-1"},
    "/v1/events": {"id": "raw-1", "team": "fresh-team", "model": "m", "latency_ms": -1},
}
FRAMINGS = [
    "exact",
    "short_then_hang_up",  # Content-Length larger than the body sent
    "long",  # Content-Length smaller than the body
    "not_a_number",
    "two_lengths",
    "huge_length",
    "chunked",
    "broken_chunks",
    "chunked_and_length",
    "bad_header",
]
BAD_LENGTHS = ["abc", "-1", "1e3", "0x10", "+5", "5 5", "", "99999999999999999999999"]
BAD_HEADERS = [
    b"X-Junk: a\x00b\r\n",
    b"X-Junk: " + b"a" * 70_000 + b"\r\n",
    b"No colon here\r\n",
    b" leading-space: x\r\n",
    b"Authorization: Bearer \xff\xfe\r\n",
]


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an answer
    content_type: str
    body: bytes


def exchange(url: str, request: bytes, *, hang_up: bool) -> Answer:
    """Send `request` and read the first answer. With `hang_up` the client
    closes its side after sending (uvicorn then drops the request)."""
    host, port = url.removeprefix("http://").split(":")
    data = b""
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        try:
            sock.sendall(request)
            if hang_up:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed
        try:
            while not _complete(data) and (chunk := sock.recv(65536)):
                data += chunk
        except ConnectionResetError:
            pass
        except TimeoutError as exc:
            raise AssertionError(f"no answer in time (a hang): {request[:300]!r}") from exc
    if not data:
        return Answer(None, "", b"")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = _headers(lines[1:])
    length = int(headers.get(b"content-length", len(rest)))
    return Answer(
        int(lines[0].split()[1]), headers.get(b"content-type", b"").decode(), rest[:length]
    )


def _headers(lines: list[bytes]) -> dict[bytes, bytes]:
    return {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in lines)
    }


def _complete(data: bytes) -> bool:
    """Whether `data` holds a whole answer (head and Content-Length bytes)."""
    head, found, rest = data.partition(b"\r\n\r\n")
    if not found:
        return False
    length = _headers(head.split(b"\r\n")[1:]).get(b"content-length")
    return length is not None and len(rest) >= int(length)


@st.composite
def raw_request(draw, key: str) -> tuple[str, bytes]:
    path = draw(st.sampled_from(sorted(BODIES)))
    framing = draw(st.sampled_from(FRAMINGS))
    body = json.dumps(BODIES[path]).encode()
    lines = [
        f"POST {path} HTTP/1.1".encode(),
        b"Host: 127.0.0.1",
        f"Authorization: Bearer {key}".encode(),
        b"Content-Type: application/json",
    ]
    extra = b""
    if framing == "exact":
        lines.append(f"Content-Length: {len(body)}".encode())
    elif framing == "short_then_hang_up":
        sent = draw(st.integers(0, len(body)))
        lines.append(f"Content-Length: {len(body) + draw(st.integers(1, 10_000))}".encode())
        body = body[:sent]
    elif framing == "long":
        lines.append(f"Content-Length: {draw(st.integers(0, len(body) - 1))}".encode())
        body += draw(st.sampled_from([b"", b"GARBAGE", b"\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"]))
    elif framing == "not_a_number":
        lines.append(b"Content-Length: " + draw(st.sampled_from(BAD_LENGTHS)).encode())
    elif framing == "two_lengths":
        lines += [
            f"Content-Length: {len(body)}".encode(),
            f"Content-Length: {len(body) + 1}".encode(),
        ]
    elif framing == "huge_length":
        lines.append(f"Content-Length: {draw(st.integers(2**20 + 1, 10**15))}".encode())
    elif framing in ("chunked", "broken_chunks", "chunked_and_length"):
        lines.append(b"Transfer-Encoding: chunked")
        if framing == "chunked_and_length":
            lines.append(f"Content-Length: {len(body)}".encode())
        cut = draw(st.integers(0, len(body)))
        chunks = [part for part in (body[:cut], body[cut:]) if part]
        if framing == "broken_chunks":
            size = draw(
                st.sampled_from([b"zz", b"-1", b"FFFFFFFFFFFFFFFFFFFF", b"", b"1;" + b"x" * 9000])
            )
            body = b"".join(b"%s\r\n%s\r\n" % (size, c) for c in chunks) + b"0\r\n\r\n"
        else:
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}".encode())
        extra = draw(st.sampled_from(BAD_HEADERS))
    request = b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n" + body
    return framing, request


def check_raw(framing: str, answer: Answer, request: bytes) -> None:
    where = f"{framing}: {request[:400]!r} -> {answer}"
    if answer.status is None:
        # Only a client that hung up mid-body (or whose framing the server
        # gave up on) may go unanswered.
        assert framing == "short_then_hang_up", where
        return
    assert 400 <= answer.status < 500, where
    if answer.content_type == "application/json":
        error = json.loads(answer.body)["error"]
        assert error["code"] in DOCUMENTED[answer.status], where
        assert error["message"], where
    else:
        # uvicorn's own answer to framing it cannot parse.
        assert answer.status in (400, 413, 414, 431) and framing != "exact", where


EXAMPLES, MINIMUM = 80, 500


def test_malformed_framing(server, world):
    sent = 0

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(raw_request(world.admin), min_size=4, max_size=12))
    def run(requests: list[tuple[str, bytes]]) -> None:
        nonlocal sent
        before = snapshot()
        for framing, request in requests:
            answer = exchange(server.url, request, hang_up=framing == "short_then_hang_up")
            check_raw(framing, answer, request)
            sent += 1
            COUNTS["raw HTTP framing"] += 1
        assert snapshot() == before, [r[:200] for _, r in requests]

    run()
    assert sent >= MINIMUM, sent
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    COMPLETED.add("test_malformed_framing")
