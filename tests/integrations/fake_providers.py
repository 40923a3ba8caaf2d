"""A local fake of the OpenAI and Anthropic HTTP APIs, for the real SDKs to
call in tests (no network): fixed usage, streams as server-sent events, and
failures on request. It counts the calls that reach it."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# What every call "uses". At tg-chat / tg-claude prices ($1/M input, $0.50/M
# cache read, $2/M cache write, $10/M output):
OPENAI_USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 100,
    "total_tokens": 1100,
    "prompt_tokens_details": {"cached_tokens": 200},
    "completion_tokens_details": {"reasoning_tokens": 0},
}
OPENAI_COST = "0.0019"  # 800 input + 200 cache read + 100 output
ANTHROPIC_START_USAGE = {
    "input_tokens": 50,
    "cache_read_input_tokens": 800,
    "cache_creation_input_tokens": 100,
    "output_tokens": 1,
}
ANTHROPIC_USAGE = {
    **ANTHROPIC_START_USAGE,
    "output_tokens": 300,
    "output_tokens_details": {"thinking_tokens": 200},
}
ANTHROPIC_COST = "0.00365"  # 50 input + 800 cache read + 100 cache write + 300 output
ANTHROPIC_START_COST = "0.00066"  # the same with 1 output token


@dataclass
class FakeProvider:
    url: str = ""
    # "ok", "fail" (500), or "cut" (a stream that breaks off after two chunks).
    mode: str = "ok"
    chunks: int = 3
    # Seconds between a stream's events (a long stream).
    chunk_delay: float = 0.0
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.requests)


def _sse(events: list[tuple[str | None, Any]]) -> list[bytes]:
    out = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        prefix = f"event: {name}\n" if name else ""
        out.append(f"{prefix}data: {text}\n\n".encode())
    return out


def _openai_chunks(fake: FakeProvider, body: dict[str, Any]) -> list[bytes]:
    base = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": body["model"],
    }
    events: list[tuple[str | None, Any]] = [
        (
            None,
            {
                **base,
                "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}],
            },
        )
        for i in range(fake.chunks)
    ]
    events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append((None, {**base, "choices": [], "usage": OPENAI_USAGE}))
    events.append((None, "[DONE]"))
    return _sse(events)


def _openai_completion(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": OPENAI_USAGE,
    }


def _anthropic_message(body: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": "hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def _anthropic_events(fake: FakeProvider, body: dict[str, Any]) -> list[bytes]:
    start = {**_anthropic_message(body, ANTHROPIC_START_USAGE), "content": [], "stop_reason": None}
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    events += [
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": f"w{i} "},
            },
        )
        for i in range(fake.chunks)
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 300, "output_tokens_details": {"thinking_tokens": 200}},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return _sse(events)


def _handler(fake: FakeProvider) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            fake.requests.append((self.path, body))
            if fake.mode == "fail":
                return self._json(
                    500, {"error": {"type": "server_error", "message": "upstream broke"}}
                )
            if self.path == "/v1/chat/completions":
                if body.get("stream"):
                    return self._stream(_openai_chunks(fake, body))
                return self._json(200, _openai_completion(body))
            if self.path == "/v1/messages":
                if body.get("stream"):
                    return self._stream(_anthropic_events(fake, body))
                return self._json(200, _anthropic_message(body, ANTHROPIC_USAGE))
            return self._json(404, {"error": {"message": f"no route {self.path}"}})

        def _json(self, status: int, data: dict[str, Any]) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, events: list[bytes]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for n, event in enumerate(events):
                    if fake.mode == "cut" and n == 2:
                        # Break off mid-stream: no terminating chunk, connection closed.
                        self.close_connection = True
                        self.wfile.flush()
                        self.connection.shutdown(2)
                        return
                    self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    self.wfile.flush()
                    time.sleep(fake.chunk_delay)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client went away (a stream closed early)

    return Handler


class QuietHTTPServer(http.server.ThreadingHTTPServer):
    """A client that drops its connection (an abandoned stream, a closed pool)
    is what these tests do on purpose: not worth a traceback in the output."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeProviderServer:
    def __init__(self) -> None:
        self.fake = FakeProvider()
        self.httpd = QuietHTTPServer(("127.0.0.1", 0), _handler(self.fake))
        self.httpd.daemon_threads = True
        self.fake.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
