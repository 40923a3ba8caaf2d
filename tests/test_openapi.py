"""The OpenAPI document (config/openapi.yaml, served at GET /v1/openapi.json)
cannot drift from the server or from docs/api.md.

- It is a valid OpenAPI 3.1 document, and every example in it validates
  against its schema.
- Every route of the server (config/asgi.py's hot-path routes and Django's
  /v1/ views) is in it, and every endpoint docs/api.md names.
- Live answers of real servers, for every operation and every status the
  document gives it, validate against it (openapi-core): the shared test
  server for the answers of a working service, a server whose database is
  gone for the 503s, one that throttles bad keys for the 429s, one with a
  short body timeout for the 408s. The set of (operation, status) answered
  must equal the set the document declares, so a status added to either
  side without the other fails here.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.deserializing.media_types.util import plain_loads
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec
from werkzeug.datastructures import Headers, ImmutableMultiDict

from budgets.models import Budget, Organization, Reservation
from config import openapi as document_module
from tests.budgets.test_reservation_retention import id_made_at
from tests.conftest import auth
from tracking.models import Price

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return document_module.load()


def declared(spec: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every (METHOD, path, status) the document gives an answer for."""
    return {
        (method.upper(), path, status)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
        for status in operation["responses"]
    }


# --- the document itself ---------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1.")
    validate_spec(spec)
    # YAML could have turned an unquoted time or number into another type.
    assert json.loads(json.dumps(spec)) == spec


def _examples(node: Any, where: str = "") -> list[tuple[str, dict, Any]]:
    """(where, schema, example) of every media type's example(s) and every
    schema's `examples`."""
    found = []
    if isinstance(node, dict):
        if "schema" in node and ("example" in node or "examples" in node):
            values = [node["example"]] if "example" in node else []
            values += [e["value"] for e in node.get("examples", {}).values()]
            found += [(where, node["schema"], value) for value in values]
        for name, child in node.items():
            found += _examples(child, f"{where}/{name}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _examples(child, f"{where}/{index}")
    return found


def test_every_example_validates_against_its_schema(spec):
    examples = _examples(spec["paths"]) + _examples(spec["components"]["responses"], "#responses")
    assert len(examples) > 40
    for where, schema, example in examples:
        validator = OAS31Validator({**schema, "components": spec["components"]})
        errors = [e.message for e in validator.iter_errors(example)]
        assert not errors, (where, errors)


def test_the_server_serves_the_document_as_json(api, spec):
    response = api.get("/v1/openapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == spec
    again = api.get("/v1/openapi.json", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_every_route_of_the_server_is_documented(spec):
    from config.asgi import ROUTES
    from config.urls import urlpatterns

    documented = {(m, p) for m, p, _ in declared(spec)}
    for route in ROUTES:
        path = route.path.replace("{subject}", "{id}")
        assert (route.method, path) in documented, route.path
    django_v1 = {
        "/" + re.sub(r"<str:(\w+)>", r"{\1}", str(p.pattern))
        for included in urlpatterns
        for p in getattr(included, "url_patterns", [])
        if str(p.pattern).startswith("v1/")
    }
    assert django_v1 == {
        "/v1/usage",
        "/v1/audit",
        "/v1/org",
        "/v1/teams/{slug}",
        "/v1/keys/{lookup_id}",
        "/v1/reports/chargeback",
    }
    for path in django_v1:
        assert any(p == path for _, p in documented), path


def test_every_endpoint_of_api_md_is_documented(spec):
    """Each `METHOD /path` docs/api.md names is in the document (and the
    other way round for the /v1/ routes)."""
    text = (ROOT / "docs" / "api.md").read_text()
    named = {
        (method, _shape(path.rstrip(".,;:)`")))
        for methods, path in re.findall(
            r"\b((?:GET|PUT|PATCH|POST|DELETE)(?:\|[A-Z]+)*)\s+(/[\w/{}.\-=]*)", text
        )
        for method in methods.split("|")
    }
    documented = {(m, _shape(p)) for m, p, _ in declared(spec)}
    assert len(named) > 10, named
    # An example (PUT /v1/budgets/team/search/day) names its template.
    patterns = {(m, re.compile(re.escape(p).replace(r"\{\}", "[^/]+"))) for m, p in documented}
    missing = {
        (m, p) for m, p in named if not any(m == dm and rx.fullmatch(p) for dm, rx in patterns)
    }
    assert not missing, f"named in docs/api.md, not in the OpenAPI document: {missing}"
    unnamed = documented - named
    assert not unnamed, f"in the OpenAPI document, not named in docs/api.md: {unnamed}"


def _shape(path: str) -> str:
    """A path with its parameters unnamed: /v1/x/{id} and /v1/x/{reservation_id} agree."""
    return re.sub(r"\{\w+\}", "{}", path)


# --- live answers ------------------------------------------------------------------------


@dataclass
class LiveRequest:
    """A request as openapi-core reads one (its Request protocol)."""

    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    content_type: str = "application/json"
    body: bytes | None = None


@dataclass
class LiveResponse:
    status_code: int
    content_type: str
    headers: Headers
    data: bytes


@dataclass
class Checker:
    """Validates answers against the document and records which (method,
    path, status) were seen."""

    openapi: OpenAPI
    templates: list[tuple[re.Pattern[str], str]]
    seen: set[tuple[str, str, str]] = field(default_factory=set)

    def check(self, method: str, url: str, status: int, headers: dict, body: bytes) -> None:
        parts = urlsplit(url)
        request = LiveRequest(
            host_url=f"{parts.scheme}://{parts.netloc}",
            path=parts.path,
            method=method.lower(),
            parameters=RequestParameters(
                query=ImmutableMultiDict(parse_qsl(parts.query)), header=Headers(), cookie={}
            ),
        )
        content_type = headers.get("content-type", "")
        response = LiveResponse(status, content_type, Headers(list(headers.items())), body)
        self.openapi.validate_response(request, response)
        template = next(t for pattern, t in self.templates if pattern.fullmatch(parts.path))
        self.seen.add((method.upper(), template, str(status)))


@pytest.fixture(scope="module")
def checker(spec) -> Checker:
    templates = [
        (re.compile(re.sub(r"\{\w+\}", "[^/]+", path)), path)
        for path in sorted(spec["paths"], key=lambda p: p.count("{"))
    ]
    # CSV is text like text/plain, which openapi-core reads as such already.
    config = Config(extra_media_type_deserializers={"text/csv": plain_loads})
    return Checker(OpenAPI.from_dict(spec, config=config), templates)


class Live:
    """A client of one server whose every answer is checked."""

    def __init__(self, url: str, checker: Checker) -> None:
        self.client = httpx.Client(base_url=url, timeout=15)
        self.checker = checker

    def __call__(self, status: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        self.checker.check(
            method, str(response.request.url), status, dict(response.headers), response.content
        )
        return response


@pytest.fixture
def setup(org, make_org, make_key, make_budget) -> dict[str, Any]:
    """An org with a $1.00 day budget, keys of every kind, a strict org."""
    make_budget(org, "1")
    strict = make_org("rigid", strict=True)
    other = make_org("other")
    return {
        "key": make_key(org),
        "admin": make_key(org, admin=True),
        "team_key": make_key(org, team="search"),
        "strict_key": make_key(strict),
        "strict_admin": make_key(strict, admin=True),
        "other_key": make_key(other),
    }


BAD_KEY = {"Authorization": "Bearer tg_000000000000_nope"}
HOLD = {"team": "search", "user": "alice", "estimated_cost_usd": "0.10"}
TOO_BIG = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'


def test_every_documented_answer_is_what_the_server_sends(
    server, live_server_factory, setup, checker, spec, org, test_database_url
):
    live = Live(server.url, checker)
    keys = {name: auth(value) for name, value in setup.items()}
    json_ct = {"Content-Type": "application/json"}
    _working_service(live, keys, json_ct, org)

    dead = live_server_factory(DATABASE_URL="postgresql://nobody@127.0.0.1:9/nothing")
    _database_gone(Live(dead.url, checker), keys)

    throttled = live_server_factory(API_AUTH_FAILURES_PER_MINUTE="1")
    _bad_keys_throttled(Live(throttled.url, checker), keys)

    slow = live_server_factory(API_BODY_TIMEOUT_SECONDS="0.3")
    _bodies_that_stop(slow.url, checker, setup["key"], setup["admin"])

    missing = declared(spec) - checker.seen
    assert not missing, f"documented but never answered: {sorted(missing)}"
    assert checker.seen <= declared(spec)


def _working_service(live: Live, keys: dict, json_ct: dict, org: Organization) -> None:
    key, admin, team_key = keys["key"], keys["admin"], keys["team_key"]
    # Operations.
    live(200, "GET", "/healthz")
    live(200, "GET", "/readyz")
    live(200, "GET", "/metrics")
    live(200, "GET", "/v1/openapi.json")

    for path, ok in (("/v1/budget/check", 200), ("/v1/budget/reservations", 201)):
        live(ok, "POST", path, json=HOLD, headers=key)
        live(400, "POST", path, content=b"{", headers={**key, **json_ct})
        live(401, "POST", path, json=HOLD, headers=BAD_KEY)
        live(403, "POST", path, json={**HOLD, "team": "other"}, headers=team_key)
        live(404, "POST", path, json={**HOLD, "team": "nope"}, headers=keys["strict_key"])
        live(413, "POST", path, content=TOO_BIG, headers={**key, **json_ct})
        live(422, "POST", path, json={**HOLD, "estimated_cost_usd": "-1"}, headers=key)
    live(402, "POST", "/v1/budget/reservations", json={**HOLD, "estimated_cost_usd": "5"},
         headers=key)  # fmt: skip
    # A per-request cap answers 402 request_too_expensive on both.
    Organization.objects.filter(pk=org.pk).update(max_request_usd=Decimal("0.5"))
    live(402, "POST", "/v1/budget/check", json={**HOLD, "estimated_cost_usd": "0.9"}, headers=key)
    live(402, "POST", "/v1/budget/reservations", json={**HOLD, "estimated_cost_usd": "0.9"},
         headers=key)  # fmt: skip
    Organization.objects.filter(pk=org.pk).update(max_request_usd=None, unpriced_policy="deny")
    live(422, "POST", "/v1/budget/reservations", json={**HOLD, "model": "tg-unknown"}, headers=key)
    Organization.objects.filter(pk=org.pk).update(unpriced_policy="fallback")

    hold = live(201, "POST", "/v1/budget/reservations", json=HOLD, headers=key).json()
    hold_id = hold["reservation_id"]
    extend = f"/v1/budget/reservations/{hold_id}/extend"
    live(200, "POST", extend, json={"ttl_seconds": 600}, headers=key)
    live(200, "POST", extend, headers=key)
    live(400, "POST", extend, content=b"[]", headers={**key, **json_ct})
    live(401, "POST", extend, headers=BAD_KEY)
    live(404, "POST", "/v1/budget/reservations/not-a-uuid/extend", headers=key)
    live(413, "POST", extend, content=TOO_BIG, headers={**key, **json_ct})
    live(422, "POST", extend, json={"ttl_seconds": 0}, headers=key)
    old = id_made_at(Reservation.objects.get(pk=hold_id).created_at.replace(year=2020))
    live(409, "POST", f"/v1/budget/reservations/{old}/extend", headers=key)

    # Events: a partial settlement, a final one, a replay, the errors.
    event = {"id": "oa-1", "team": "search", "model": "m", "cost_usd": "0.01",
             "reservation_id": hold_id, "final": False}  # fmt: skip
    partial = live(201, "POST", "/v1/events", json=event, headers=key).json()
    assert partial["results"][0]["reservation"]["status"] == "active"
    live(200, "POST", "/v1/events", json=event, headers=key)
    final = {**event, "id": "oa-2", "final": True}
    live(201, "POST", "/v1/events", json={"events": [final]}, headers=key)
    live(409, "POST", extend, headers=key)  # settled now
    live(400, "POST", "/v1/events", content=b"nope", headers={**key, **json_ct})
    live(401, "POST", "/v1/events", json=event, headers=BAD_KEY)
    live(403, "POST", "/v1/events", json={**event, "id": "oa-3", "team": "other"},
         headers=team_key)  # fmt: skip
    live(404, "POST", "/v1/events", json={"id": "oa-4", "team": "nope", "model": "m", "cost_usd": 1},
         headers=keys["strict_key"])  # fmt: skip
    live(409, "POST", "/v1/events", json={**event, "cost_usd": "0.02"}, headers=key)
    live(413, "POST", "/v1/events", json={"events": [{"id": str(i)} for i in range(1001)]},
         headers=key)  # fmt: skip
    live(422, "POST", "/v1/events", json={"events": [{**event, "id": "oa-5", "final": "no"}]},
         headers=key)  # fmt: skip

    release = f"/v1/budget/reservations/{hold_id}/release"
    live(200, "POST", release, headers=key)
    live(401, "POST", release, headers=BAD_KEY)
    live(404, "POST", "/v1/budget/reservations/not-a-uuid/release", headers=key)

    live(200, "GET", "/v1/budget/status?team=search&user=alice", headers=key)
    live(401, "GET", "/v1/budget/status", headers=BAD_KEY)
    live(403, "GET", "/v1/budget/status?team=other", headers=team_key)
    live(404, "GET", "/v1/budget/status?team=nope", headers=keys["strict_key"])
    live(422, "GET", "/v1/budget/status?team=%01", headers=key)

    budget = "/v1/budgets/team/search/day"
    live(200, "PUT", budget, json={"limit_usd": "5"}, headers=admin)
    live(200, "GET", "/v1/budgets", headers=admin)
    live(401, "GET", "/v1/budgets", headers=BAD_KEY)
    live(403, "GET", "/v1/budgets", headers=key)
    live(400, "PUT", budget, content=b"{", headers={**admin, **json_ct})
    live(401, "PUT", budget, json={"limit_usd": "5"}, headers=BAD_KEY)
    live(403, "PUT", budget, json={"limit_usd": "5"}, headers=key)
    live(404, "PUT", "/v1/budgets/team/nope/day", json={"limit_usd": "5"},
         headers=keys["strict_admin"])  # fmt: skip
    live(413, "PUT", budget, content=TOO_BIG, headers={**admin, **json_ct})
    live(422, "PUT", budget, json={"limit_usd": "-5"}, headers=admin)
    live(204, "DELETE", budget, headers=admin)
    live(401, "DELETE", budget, headers=BAD_KEY)
    live(403, "DELETE", budget, headers=key)
    live(404, "DELETE", budget, headers=admin)
    live(422, "DELETE", "/v1/budgets/team/search/fortnight", headers=admin)
    assert not Budget.objects.filter(scope="team").exists()

    live(200, "GET", "/v1/audit?object=budget:team/search/day&limit=5", headers=admin)
    many = "&".join(f"p{i}=1" for i in range(1001))
    live(400, "GET", f"/v1/audit?{many}", headers=admin)
    live(401, "GET", "/v1/audit", headers=BAD_KEY)
    live(403, "GET", "/v1/audit", headers=key)
    live(422, "GET", "/v1/audit?limit=0", headers=admin)

    live(200, "GET", "/v1/org", headers=key)
    live(401, "GET", "/v1/org", headers=BAD_KEY)
    live(200, "PATCH", "/v1/org", json={"unpriced_policy": "deny"}, headers=admin)
    live(400, "PATCH", "/v1/org", content=b"[1]", headers={**admin, **json_ct})
    live(401, "PATCH", "/v1/org", json={"strict": True}, headers=BAD_KEY)
    live(403, "PATCH", "/v1/org", json={"strict": True}, headers=key)
    live(422, "PATCH", "/v1/org", json={"time_zone": "Mars/Olympus"}, headers=admin)

    live(200, "GET", "/v1/teams/search", headers=key)
    live(401, "GET", "/v1/teams/search", headers=BAD_KEY)
    live(403, "GET", "/v1/teams/ads", headers=team_key)
    live(404, "GET", "/v1/teams/nope", headers=key)
    live(200, "PATCH", "/v1/teams/search", json={"name": "Search"}, headers=admin)
    live(400, "PATCH", "/v1/teams/search", content=b"[1]", headers={**admin, **json_ct})
    live(401, "PATCH", "/v1/teams/search", json={"name": "x"}, headers=BAD_KEY)
    live(403, "PATCH", "/v1/teams/search", json={"name": "x"}, headers=key)
    live(404, "PATCH", "/v1/teams/nope", json={"name": "x"}, headers=admin)
    live(422, "PATCH", "/v1/teams/search", json={"allowed_models": ["*"]}, headers=admin)
    own = "/v1/keys/" + key["Authorization"].split("_")[1]
    live(200, "GET", own, headers=admin)
    live(401, "GET", own, headers=BAD_KEY)
    live(403, "GET", own, headers=key)
    live(404, "GET", "/v1/keys/000000000000", headers=admin)
    live(422, "GET", "/v1/keys/nope", headers=admin)
    live(200, "PATCH", own, json={"name": "gateway"}, headers=admin)
    live(400, "PATCH", own, content=b"[1]", headers={**admin, **json_ct})
    live(401, "PATCH", own, json={"name": "x"}, headers=BAD_KEY)
    live(403, "PATCH", own, json={"name": "x"}, headers=key)
    live(404, "PATCH", "/v1/keys/000000000000", json={"name": "x"}, headers=admin)
    live(422, "PATCH", own, json={"max_request_usd": "-1"}, headers=admin)

    live(200, "GET", "/v1/usage?group_by=team,user,model&granularity=day", headers=key)
    live(200, "GET", "/v1/usage?format=csv&group_by=team", headers=key)
    live(400, "GET", f"/v1/usage?{many}", headers=key)
    live(401, "GET", "/v1/usage", headers=BAD_KEY)
    live(422, "GET", "/v1/usage?granularity=week", headers=key)
    Organization.objects.filter(pk=org.pk).update(report_tags=["customer"])
    live(200, "GET", "/v1/usage?group_by=team,tag:customer&granularity=month", headers=key)
    live(200, "GET", "/v1/usage?group_by=tag:customer&format=csv", headers=key)
    live(422, "GET", "/v1/usage?group_by=tag:feature", headers=key)
    live(200, "GET", "/v1/reports/chargeback?tag=customer", headers=key)
    live(200, "GET", "/v1/reports/chargeback?tag=customer&format=json", headers=key)
    live(400, "GET", f"/v1/reports/chargeback?{many}", headers=key)
    live(401, "GET", "/v1/reports/chargeback?tag=customer", headers=BAD_KEY)
    live(422, "GET", "/v1/reports/chargeback?tag=customer&month=2026-13", headers=key)

    # A real entry, so that the catalog's items are validated too.
    Price.objects.create(
        provider="openai",
        model="tg-openapi",
        effective_from=datetime(2024, 1, 1, tzinfo=UTC),
        input_per_token=Decimal("0.0000025"),
        output_per_token=Decimal("0.00001"),
        web_search_per_call=Decimal("0.025"),
        region_multipliers={"us": 1.1},
    )
    catalog = live(200, "GET", "/v1/prices")
    assert any(p["model"] == "tg-openapi" for p in catalog.json()["prices"])
    live(200, "GET", "/v1/prices?model=tg-openapi", headers=key)
    live(304, "GET", "/v1/prices", headers={"If-None-Match": catalog.headers["etag"]})
    live(401, "GET", "/v1/prices?model=gpt-4o", headers=BAD_KEY)
    live(404, "GET", "/v1/prices?model=tg-no-such-model", headers=key)
    live(422, "GET", "/v1/prices?model=%01")

    live(200, "GET", "/v1/dashboard/summary?range=24h", headers=key)
    live(401, "GET", "/v1/dashboard/summary")
    live(403, "GET", "/v1/dashboard/summary?org=other", headers=key)
    live(404, "GET", "/v1/dashboard/summary?team=nope", headers=key)
    live(422, "GET", "/v1/dashboard/summary?range=1y", headers=key)
    live(200, "GET", "/v1/dashboard/summary?range=24h&group_tag=customer", headers=key)
    live(422, "GET", "/v1/dashboard/summary?group_tag=feature", headers=key)
    live(
        200, "GET", "/v1/dashboard/summary?range=custom&from=2026-01-01&to=2026-01-31", headers=key
    )
    live(200, "GET", "/v1/dashboard/holds", headers=key)
    live(401, "GET", "/v1/dashboard/holds")
    live(403, "GET", "/v1/dashboard/holds?org=other", headers=key)
    live(404, "GET", "/v1/dashboard/holds?user=nope", headers=key)
    live(422, "GET", "/v1/dashboard/holds?model=%01", headers=key)


def _database_gone(live: Live, keys: dict) -> None:
    """A server whose database does not answer: every call that needs it is a 503."""
    key, admin = keys["key"], keys["admin"]
    hold = "/v1/budget/reservations/01a2474a-53dc-7114-98f2-aa6f3c8525bb"
    live(503, "GET", "/readyz")
    live(503, "POST", "/v1/budget/check", json=HOLD, headers=key)
    live(503, "POST", "/v1/budget/reservations", json=HOLD, headers=key)
    live(503, "POST", f"{hold}/release", headers=key)
    live(503, "POST", f"{hold}/extend", headers=key)
    live(503, "GET", "/v1/budget/status", headers=key)
    live(503, "POST", "/v1/events", json={"id": "x", "model": "m"}, headers=key)
    live(503, "GET", "/v1/budgets", headers=admin)
    live(503, "PUT", "/v1/budgets/team/search/day", json={"limit_usd": "1"}, headers=admin)
    live(503, "DELETE", "/v1/budgets/team/search/day", headers=admin)
    live(503, "GET", "/v1/audit", headers=admin)
    live(503, "GET", "/v1/org", headers=key)
    live(503, "PATCH", "/v1/org", json={"strict": True}, headers=admin)
    live(503, "GET", "/v1/teams/search", headers=key)
    live(503, "PATCH", "/v1/teams/search", json={"name": "x"}, headers=admin)
    own = "/v1/keys/" + key["Authorization"].split("_")[1]
    live(503, "GET", own, headers=admin)
    live(503, "PATCH", own, json={"name": "x"}, headers=admin)
    live(503, "GET", "/v1/usage", headers=key)
    live(503, "GET", "/v1/reports/chargeback?tag=customer", headers=key)
    live(503, "GET", "/v1/prices")
    live(503, "GET", "/v1/dashboard/summary", headers=key)
    live(503, "GET", "/v1/dashboard/holds", headers=key)


def _bad_keys_throttled(live: Live, keys: dict) -> None:
    """After bad keys from its address, a client's keyed calls are 429s."""
    for _ in range(3):
        live.client.get("/v1/budgets", headers=BAD_KEY)
    key, admin = keys["key"], keys["admin"]
    hold = "/v1/budget/reservations/01a2474a-53dc-7114-98f2-aa6f3c8525bb"
    live(429, "POST", "/v1/budget/check", json=HOLD, headers=key)
    live(429, "POST", "/v1/budget/reservations", json=HOLD, headers=key)
    live(429, "POST", f"{hold}/release", headers=key)
    live(429, "POST", f"{hold}/extend", headers=key)
    live(429, "GET", "/v1/budget/status", headers=key)
    live(429, "POST", "/v1/events", json={"id": "x", "model": "m"}, headers=key)
    live(429, "GET", "/v1/budgets", headers=admin)
    live(429, "PUT", "/v1/budgets/team/search/day", json={"limit_usd": "1"}, headers=admin)
    live(429, "DELETE", "/v1/budgets/team/search/day", headers=admin)


def _bodies_that_stop(url: str, checker: Checker, key: str, admin: str) -> None:
    """A body that stops arriving is a 408 on every operation that takes one."""
    hold = "/v1/budget/reservations/01a2474a-53dc-7114-98f2-aa6f3c8525bb/extend"
    for method, path, who in [
        ("POST", "/v1/budget/check", key),
        ("POST", "/v1/budget/reservations", key),
        ("POST", hold, key),
        ("POST", "/v1/events", key),
        ("PUT", "/v1/budgets/team/search/day", admin),
    ]:
        status, headers, body = _stalled(url, method, path, who)
        assert status == 408, (path, status, body)
        checker.check(method, url + path, status, headers, body)


def _stalled(url: str, method: str, path: str, key: str) -> tuple[int, dict, bytes]:
    """Send a request whose body stops ten bytes short; the answer, parsed."""
    host, port = url.removeprefix("http://").split(":")
    body = b'{"estimated_cost_usd": "0.1"}'
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body) + 10}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head_text, _, content = answer.partition(b"\r\n\r\n")
    lines = head_text.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, content


def _complete(answer: bytes) -> bool:
    head, _, content = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: (\d+)", head)
    return length is not None and len(content) >= int(length.group(1))
