"""GET /v1/openapi.json: the API's OpenAPI 3.1 document (config/openapi.yaml,
the machine-readable twin of docs/api.md), served as JSON by the hot-path
router and rendered for people at /docs/api/ (dashboard).

Read and converted once per process, at the first request (not at import).
tests/test_openapi.py validates live answers against it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from config.hotpath.router import Request, Response

DOCUMENT = Path(__file__).resolve().parent / "openapi.yaml"


def load() -> dict[str, Any]:
    """The document as a dict (YAML's safe subset: no tags, no objects)."""
    with DOCUMENT.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


@cache
def _rendered() -> tuple[bytes, str]:
    body = json.dumps(load(), ensure_ascii=False, separators=(",", ":")).encode()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def document(request: Request) -> Response:
    body, etag = _rendered()
    headers = {
        "content-type": "application/json",
        "etag": etag,
        "cache-control": "public, max-age=300",
    }
    if etag in {
        tag.strip()
        for tag in request.headers.get(b"if-none-match", b"").decode("latin-1").split(",")
    }:
        return Response(304, b"", headers)
    return Response(200, body, headers)
