"""GET /v1/dashboard/summary: everything the dashboard page shows, in one
response from two database calls (tollgate_dashboard_summary and
tollgate_dashboard_breakdown in dashboard/sql/functions/).

Served by the hot-path router (config/hotpath/router.py), not by a Django view: a
dashboard that polls or many people watching must not cost a thread hop and
a new connection per request. It takes an API key (gateways, scripts) or the
session cookie of a signed-in dashboard user (the page's own fetch).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from datetime import UTC, datetime
from typing import Any, NamedTuple, NotRequired, TypedDict

from django.conf import settings

from budgets import auth
from config.hotpath import db, inputs
from config.hotpath.errors import ApiError, JsonBody
from config.hotpath.router import Request, Response
from dashboard import access, live, selection
from dashboard.selection import DEFAULT_RANGE, RANGES, Selection

__all__ = ["DEFAULT_RANGE", "RANGES", "holds", "summary"]

# Summaries being computed in this process, by what they show (the org, and
# the selection: range, custom dates, team, user, model). Everyone who
# watches the same org and selection while one is being computed gets its
# answer instead of starting another: ten people on one dashboard cost the
# database one summary, not ten (and leave its CPU to the hot path).
_in_flight: dict[tuple[Any, ...], asyncio.Future] = {}

# Summaries computed in this process in the last DASHBOARD_SUMMARY_MAX_AGE_MS,
# by what they show: (monotonic time the computation started, its answer).
# They answer the same requests until then, as if those had come that much
# earlier, with the live updates heard since (`updates`), which the page adds
# where the summary's snapshot did not see them. Each is dropped when it
# expires, so at most one a (org, selection) is kept.
_recent: dict[tuple[Any, ...], tuple[float, Computed]] = {}

# Seconds a keeper holds live updates beyond DASHBOARD_SUMMARY_MAX_AGE_MS: a
# computation that shares its answer may take up to a request's database
# time (BUDGET_DB_TIMEOUT_MS) before the last of its callers gets it.
KEEP_MARGIN = 30.0

# Dashboard statements running at once in this process, at most
# DASHBOARD_DB_CONCURRENCY (default 2): a bulkhead between the dashboards and
# the hot path on the same PostgreSQL, which bounds the cores a process's
# dashboards can take however many people look. Two let one summary run its
# two statements side by side, which the largest ranges need to stay within
# their latency target (docs/benchmarks/questions/dashboard-scale.md).
# A request waits for a slot within its database time (BUDGET_DB_TIMEOUT_MS),
# then gets 503 store_unavailable.
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _loop_slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(settings.DASHBOARD_DB_CONCURRENCY)
    return slots


async def _fetch_one(name: str, params: dict[str, Any]) -> Any:
    slots = _loop_slots()
    try:
        async with asyncio.timeout(db.time_left(None)):
            await slots.acquire()
    except TimeoutError:
        raise db.StoreUnavailable("no dashboard slot within the time budget") from None
    try:
        return await db.fetch_one(name, params)
    finally:
        slots.release()


class UnpricedModel(TypedDict):
    model: str  # the name as sent, which no price entry resolves
    requests: int
    cost_usd: str


class Kpis(TypedDict):
    spend_usd: str  # in the range
    today_usd: str
    month_to_date_usd: str
    projected_month_usd: str  # month to date + trailing-week rate until month end
    run_rate_usd_per_hour: str
    today_starts_at: str  # local midnight
    month_starts_at: str
    month_ends_at: str
    requests: int
    errors: int
    error_rate_pct: str | None
    unpriced_requests: int
    unpriced_usd: str  # spend of models with no price in the range (hold or fallback cost)
    unpriced_models: list[UnpricedModel]  # costliest first, at most 20


class Series(TypedDict):
    key: str | None  # team slug or model; null: no team (or "other" when other is true)
    other: bool
    total_usd: str
    values: list[str]  # one amount per bucket


class Chart(TypedDict):
    split_by: str  # "team", or "model" when one team is shown
    buckets: list[str]  # start of each hour or local day
    series: list[Series]


class Ranked(TypedDict):
    id: str | None
    spend_usd: str
    requests: int


class Hold(TypedDict):
    id: str
    held_usd: str  # what it holds now: its amount less partial settlements
    team: str | None
    user: str | None
    model: str | None
    created_at: str
    expires_at: str


class Holds(TypedDict):
    count: int  # active holds that have not expired
    held_usd: str
    largest: list[Hold]  # at most 5
    newest: list[Hold]  # at most 5


# The response body ("from" is a keyword, hence the functional form).
Summary = TypedDict(
    "Summary",
    {
        "org": JsonBody,  # slug, name, time_zone
        "range": str,
        "team": str | None,
        "user": str | None,  # an end user's external id
        "model": str | None,
        "tag": str | None,  # the tag filter, name=value
        # With a tag filter: its name, value, `tags_from` (the first time whose
        # spend is known by tag in the range) and the panels that cannot
        # follow it (`not_followed`: "top.users"); else null.
        "tag_filter": JsonBody | None,
        "granularity": str,  # "hour" for 24h, else "day"
        "from": str,
        "to": str,  # the range's end, or now when it reaches now
        "ends_at": str | None,  # the range's end when it ended before this hour
        "from_date": str | None,  # its first and last local day ("YYYY-MM-DD"; not 24h)
        "to_date": str | None,
        "generated_at": str,
        "aggregated_through": str | None,  # rollups hold every event received by then
        "kpis": Kpis,
        "chart": Chart,
        "top": dict[str, list[Ranked]],  # teams, users, models
        "budgets": list[JsonBody],  # as GET /v1/budgets shows them, those of the filters
        "holds": Holds,  # holds in flight
        "recent": list[JsonBody],  # the last 50 requests, newest first
        "teams": list[str],
        "alerts": list[JsonBody],
        # The transactions the KPIs, budgets and recent requests saw, and those
        # the chart and top lists saw (PostgreSQL's "xmin:xmax:xip,…").
        "snapshot": str,
        "chart_snapshot": str,
        # Signed-in pages only: the live updates heard since the statements
        # started that they did not see, added up in one message like those
        # of /ws/spend/ (with `covers`: the messages it stands for); or none.
        "updates": NotRequired[list[JsonBody]],
        # With group_tag=NAME: spend by the values of that reported tag
        # (tollgate_dashboard_tags, dashboard/sql/functions/30_tags.sql).
        "tag_breakdown": NotRequired[JsonBody],
    },
)


def _query_value(request: Request, name: str) -> str | None:
    """An optional identifier from the query string; empty means absent."""
    value = request.query.get(name) or None
    return inputs.identifier({name: value}, name)


async def _scope(request: Request, team: str | None, org: str | None) -> dict[str, Any]:
    """Which org (and, for a team-limited key, which team) the caller may see."""
    header = request.headers.get(b"authorization")
    if header is not None:
        key = await auth.aauthenticate(header)
        request.key = key
        if org is not None and org != key.org_slug:
            raise ApiError(403, "forbidden", "This API key belongs to another organization.")
        return {"org_id": key.org_id, "org_slug": None, "team": key.acting_team(team)}
    user = await access.aauthenticate_session(request.headers.get(b"cookie"))
    org_id, org_slug = access.org_choice(
        is_staff=user.is_staff, member_org_id=user.org_id, member_slug=user.org_slug, requested=org
    )
    return {"org_id": org_id, "org_slug": org_slug, "team": team}


class Computed(NamedTuple):
    row: Any  # dashboard_summary's
    breakdown: Any  # dashboard_breakdown's
    keeper: live.Keeper | None  # hearing the org's live updates since `started`
    started: float  # monotonic time: the statements started after it
    unseen: live.Unseen  # what the keeper heard that the statements did not see
    tags: Any = None  # dashboard_tags' row, when a tag breakdown was asked for


async def _compute(params: dict[str, Any], max_age: float) -> Computed:
    keeper = None
    org_id = params["org_id"]
    if org_id is None:
        org_id = await db.fetch_value("dashboard_org", params)
        # The statements then show the org whose updates are heard.
        params = {**params, "org_id": org_id}
    if org_id is not None:
        # Joined before the statements take their snapshots: every update
        # they do not see is heard.
        keeper = await live.keep(org_id, max_age + KEEP_MARGIN)
    started = time.monotonic()
    # Two statements, on two pooled connections at once when the process
    # may run two (DASHBOARD_DB_CONCURRENCY); one `at` gives both the same bounds.
    statements = [
        _fetch_one("dashboard_summary", params),
        _fetch_one("dashboard_breakdown", params),
    ]
    if params.get("group_tag") is not None:
        # A third, only when asked: it waits for a slot if the process runs two.
        statements.append(_fetch_one("dashboard_tags", params))
    row, breakdown, *tags = await asyncio.gather(*statements)
    # The snapshots the statements read (absent for an unknown org or team).
    kpis = row[1].get("summary", {}) if row is not None else {}
    chart = (breakdown[1] or {}) if breakdown is not None else {}
    snapshots = (kpis.get("snapshot"), chart.get("chart_snapshot"))
    shown = None
    if "top" in chart and params.get("tag_name") is None:
        shown = live.Shown.of(chart, params["team"], params["user"], params["model"])
    return Computed(
        row, breakdown, keeper, started, live.Unseen(snapshots, started, shown), *tags[:1]
    )


async def _shared_computation(params: dict[str, Any], chosen: Selection) -> tuple[Computed, str]:
    """The two statements' answers, and how this request got them: "computed",
    "shared" (a computation already running) or "reused" (a recent one).
    Shared by everything the statements are given but `at`: the org and the
    selection (range, custom dates, team, user, model)."""
    params = {**chosen.params(), **params}  # the scope's team (a team-limited key's)
    key = tuple(sorted(params.items()))
    max_age = settings.DASHBOARD_SUMMARY_MAX_AGE_MS / 1000
    kept = _recent.get(key)
    if kept is not None and time.monotonic() - kept[0] < max_age:
        return kept[1], "reused"
    how = "shared"
    shared = _in_flight.get(key)
    if shared is None:
        how = "computed"
        started = time.monotonic()
        params = {**params, "at": datetime.now(UTC)}
        # Its own task: a caller that disconnects must not cancel the others' answer.
        shared = asyncio.ensure_future(_compute(params, max_age))
        _in_flight[key] = shared
        shared.add_done_callback(lambda done: _computed(key, started, max_age, done))
    # shield: one waiter cancelled (client gone) leaves the computation running.
    return await asyncio.shield(shared), how


def _computed(key: tuple[Any, ...], started: float, max_age: float, done: asyncio.Future) -> None:
    _in_flight.pop(key, None)
    if max_age <= 0 or done.cancelled() or done.exception() is not None:
        return  # an error is not kept: the next request tries again
    _recent[key] = (started, done.result())
    expires_in = started + max_age - time.monotonic()
    asyncio.get_running_loop().call_later(max(expires_in, 0), _expire, key, started)


def _updates(computed: Computed) -> list[JsonBody]:
    """The live updates heard since the statements started that they did not
    see, as one message like /ws/spend/ sends (none when there is nothing).
    Added up once for all the requests the computation answers."""
    if computed.keeper is None:
        return []
    computed.unseen.fold(computed.keeper.after(computed.unseen.folded))
    update = computed.unseen.message()
    return [] if update is None else [update]


def _expire(key: tuple[Any, ...], started: float) -> None:
    kept = _recent.get(key)
    if kept is not None and kept[0] == started:
        del _recent[key]


def _unknown(field: str, params: dict[str, Any]) -> ApiError:
    if field == "tag":
        return selection.unreported("tag", params["tag_name"])
    return ApiError(404, "not_found", f"Unknown {field} '{params[field]}'.", field=field)


async def summary(request: Request) -> Response:
    chosen = selection.parse(request.query)
    org = _query_value(request, "org")
    params = await _scope(request, chosen.team, org)
    computed, how = await _shared_computation(params, chosen)
    row, breakdown = computed.row, computed.breakdown
    if row is None or breakdown is None or row[0] != breakdown[0]:
        raise ApiError(404, "not_found", "Unknown organization.", field="org")
    result = row[1]
    if result["status"] == "not_found" or breakdown[1] is None:
        raise _unknown(result.get("field") or "team", {**chosen.params(), **params})
    body: Summary = {**result["summary"], **breakdown[1]}
    if chosen.group_tag is not None:
        tags = computed.tags[1] if computed.tags is not None else None
        if tags is None or tags.get("status") == "not_reported":
            raise selection.unreported("group_tag", chosen.group_tag)
        # Not "by_user" nor "by_tag": the tag rollups keep no end user, and
        # one name each.
        if tags.get("status") is None:
            body["tag_breakdown"] = tags
    if request.key is None:
        # A signed-in page, which follows /ws/spend/ (API keys cannot). Live
        # updates carry no tags: a page with a tag filter reloads instead.
        body["updates"] = [] if chosen.tag is not None else _updates(computed)
    key = request.key
    if key is not None and key.team_slug is not None:
        # A team-limited key sees the org's budgets and its own team's.
        body["budgets"] = [
            b
            for b in body["budgets"]
            if b["scope"] == "org" or (b["scope"] == "team" and b["id"] == key.team_slug)
        ]
    # How this answer came about, for benchmarks and the browser's network panel.
    return Response(200, body, {"server-timing": f'summary;desc="{how}"'})


# Holds in flight answered in the last HOLDS_MAX_AGE seconds in this process,
# by org and filters: pages re-read them every few seconds (dashboard.js),
# and everyone watching the same org and filters then costs PostgreSQL one
# read a second, however many they are.
HOLDS_MAX_AGE = 1.0
_recent_holds: dict[tuple[Any, ...], tuple[float, asyncio.Future]] = {}


async def holds(request: Request) -> Response:
    """GET /v1/dashboard/holds: the summary's `holds` on their own (one
    indexed read of the active holds), for the page to re-read while holds
    are taken, settled, released and expire. It takes the summary's
    parameters; only the filters (team, user, model, tag) matter: a hold is
    in flight now, whatever the range."""
    chosen = selection.parse(request.query)
    org = _query_value(request, "org")
    params = await _scope(request, chosen.team, org)
    params = {
        **params,
        "user": chosen.user,
        "model": chosen.model,
        "tag_name": chosen.tag_name,
        "tag_value": chosen.tag_value,
    }
    key = tuple(sorted(params.items()))
    now = time.monotonic()
    kept = _recent_holds.get(key)
    if kept is None or now - kept[0] >= HOLDS_MAX_AGE:
        for old in [k for k, (at, _) in _recent_holds.items() if now - at >= HOLDS_MAX_AGE]:
            del _recent_holds[old]
        kept = (now, asyncio.ensure_future(_fetch_one("dashboard_holds", params)))
        _recent_holds[key] = kept
    try:
        row = await asyncio.shield(kept[1])
    except Exception:
        if _recent_holds.get(key) is kept:
            del _recent_holds[key]  # an error is not kept: the next request tries again
        raise
    if row is None:
        raise ApiError(404, "not_found", "Unknown organization.", field="org")
    if row[1] is not None:
        raise _unknown(row[1], params)
    return Response(200, row[2], {"cache-control": "no-store"})
