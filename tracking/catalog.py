"""GET /v1/prices: the price catalog, cacheable by clients and proxies."""

from __future__ import annotations

import hashlib

import orjson

from budgets import db
from budgets.api import Request, Response


async def prices(request: Request) -> Response:
    catalog = await db.fetch_value("price_catalog", {})
    body = orjson.dumps({"prices": catalog})
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"etag": etag, "cache-control": "public, max-age=300"}
    given = request.headers.get(b"if-none-match", b"").decode("latin-1")
    if etag in {tag.strip() for tag in given.split(",")} or given.strip() == "*":
        return Response(304, None, headers)
    return Response(200, {"prices": catalog}, headers)
