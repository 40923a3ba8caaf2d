"""A local OpenAI-compatible upstream that counts its calls: what the LiteLLM
adapter's test and benchmark put behind a real LiteLLM proxy.

    .venv/bin/python -m loadtests.harness.fake_openai --port 18770 [--delay-ms 0]

`POST /v1/chat/completions` answers a completion, or a server-sent-event
stream when `stream` is true (with a final usage chunk when
`stream_options.include_usage` is set). Usage is made from the request, so a
test can predict it: `prompt_tokens` is 1 plus a token per 8 characters of
the messages (no more than a tokenizer counts, so a hold made from LiteLLM's
count covers it), `completion_tokens` is the request's `max_tokens` (or
`max_completion_tokens`, else 16). What the last user message says steers it:

- `FAIL` anywhere: a 500 error, no usage;
- `SLOW` anywhere (streams): 40 chunks 0.1 s apart, so a client can leave midway.

`GET /_stats` answers `{"calls", "failed", "streams", "usage": {completion id:
usage}}` (every call it received, failed, streamed; the usage of each
completion it answered), and `POST /_reset` clears them.
`--delay-ms` waits that long before answering (a model's time to first byte).
Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from typing import Any

import orjson
import uvicorn

Scope = dict[str, Any]


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.failed = 0
        self.streams = 0
        self.usage: dict[str, dict[str, int]] = {}


stats = Stats()
ids = itertools.count(1)
DELAY_SECONDS = 0.0


def _prompt_text(messages: Any) -> str:
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "".join(parts)


def usage_for(request: dict[str, Any]) -> dict[str, int]:
    prompt = 1 + len(_prompt_text(request.get("messages"))) // 8
    completion = request.get("max_completion_tokens") or request.get("max_tokens") or 16
    return {
        "prompt_tokens": prompt,
        "completion_tokens": int(completion),
        "total_tokens": prompt + int(completion),
    }


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send_json(send: Any, status: int, payload: Any) -> None:
    body = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _completion(completion_id: str, model: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok " * 3},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def _chunk(completion_id: str, model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    chunk = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": 1_767_225_600,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def _stream(send: Any, request: dict[str, Any], completion_id: str, usage: dict[str, int]):
    model = str(request.get("model", "fake"))
    slow = "SLOW" in _prompt_text(request.get("messages"))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    chunks = 40 if slow else 5
    first = _chunk(completion_id, model, {"role": "assistant", "content": ""}, None)
    await send({"type": "http.response.body", "body": first, "more_body": True})
    for _ in range(chunks):
        if slow:
            await asyncio.sleep(0.1)
        body = _chunk(completion_id, model, {"content": "ok "}, None)
        await send({"type": "http.response.body", "body": body, "more_body": True})
    body = _chunk(completion_id, model, {}, "stop")
    options = request.get("stream_options") or {}
    if options.get("include_usage"):
        final = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": 1_767_225_600,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        body += b"data: " + orjson.dumps(final) + b"\n\n"
    await send({"type": "http.response.body", "body": body + b"data: [DONE]\n\n"})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path, method = scope["path"], scope["method"]
    if path == "/_stats":
        return await _send_json(
            send,
            200,
            {
                "calls": stats.calls,
                "failed": stats.failed,
                "streams": stats.streams,
                "usage": stats.usage,
            },
        )
    if path == "/_reset" and method == "POST":
        stats.reset()
        return await _send_json(send, 200, {"reset": True})
    if not (path.endswith("/chat/completions") and method == "POST"):
        return await _send_json(send, 404, {"error": {"message": f"no route {path}"}})
    request = orjson.loads(await _body(receive))
    stats.calls += 1
    if DELAY_SECONDS:
        await asyncio.sleep(DELAY_SECONDS)
    if "FAIL" in _prompt_text(request.get("messages")):
        stats.failed += 1
        error = {"message": "the fake upstream fails on purpose", "type": "server_error"}
        return await _send_json(send, 500, {"error": error})
    completion_id = f"chatcmpl-fake-{next(ids)}"
    usage = usage_for(request)
    stats.usage[completion_id] = usage
    if request.get("stream"):
        stats.streams += 1
        return await _stream(send, request, completion_id, usage)
    await _send_json(send, 200, _completion(completion_id, str(request.get("model")), usage))


def main() -> None:
    global DELAY_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    DELAY_SECONDS = args.delay_ms / 1000
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="auto"
    )


if __name__ == "__main__":
    main()
