"""GET /v1/usage through the real server: exact and current totals from the
rollups plus the not-yet-aggregated events, grouping, granularity, CSV, auth
and isolation between organizations."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest
from django.utils import timezone

from budgets.audit import SYSTEM
from budgets.models import ApiKey
from budgets.services import api_key_revoke
from tests.conftest import assert_error, auth
from tests.tracking.conftest import hours_ago, run
from tracking.models import HourlyRollup, RequestEvent

USAGE = "/v1/usage"
LONG_AGO = timezone.now() - timedelta(days=30)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window(hours_back: int = 10) -> dict[str, str]:
    return {"from": iso(hours_ago(hours_back)), "to": iso(hours_ago(-1))}


def get(api, key, **params):
    response = api.get(USAGE, params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


def totals(body: dict) -> tuple[int, Decimal]:
    return (
        sum(r["requests"] for r in body["rows"]),
        sum((Decimal(r["cost_usd"]) for r in body["rows"]), Decimal(0)),
    )


# --- Shape -------------------------------------------------------------------------


def test_hourly_usage_with_every_sum(api, org, key, make_event):
    make_event(
        org,
        started_at=hours_ago(3, minutes=10),
        cost="0.0004125",
        input_tokens=10,
        cache_read_tokens=20,
        cache_write_tokens=30,
        output_tokens=40,
        reasoning_tokens=50,
    )
    make_event(org, started_at=hours_ago(3, minutes=50), cost="0.1", status="error", priced=False)
    make_event(org, started_at=hours_ago(1), cost="2")

    body = get(api, key, **window())

    assert body["from"] == iso(hours_ago(10)) and body["to"] == iso(hours_ago(-1))
    assert body["granularity"] == "hour" and body["group_by"] == []
    assert body["rows"] == [
        {
            "period_start": iso(hours_ago(3)),
            "requests": 2,
            "errors": 1,
            "unpriced_requests": 1,
            "input_tokens": 110,
            "cache_read_tokens": 20,
            "cache_write_tokens": 30,
            "output_tokens": 90,
            "reasoning_tokens": 50,
            "cost_usd": "0.1004125",
        },
        {
            "period_start": iso(hours_ago(1)),
            "requests": 1,
            "errors": 0,
            "unpriced_requests": 0,
            "input_tokens": 100,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": 50,
            "reasoning_tokens": 0,
            "cost_usd": "2",
        },
    ]


def test_group_by_team_user_and_model(api, org, key, make_event):
    make_event(org, team="search", user="alice", model="gpt-4o", started_at=hours_ago(2))
    make_event(org, team="search", user="alice", model="gpt-4o", started_at=hours_ago(2, minutes=5))
    make_event(org, team="search", user="bob", model="o3", started_at=hours_ago(2))
    make_event(org, team=None, user=None, model="o3", started_at=hours_ago(2))

    rows = get(api, key, group_by="model,team,user", **window())["rows"]

    assert [(r["team"], r["user"], r["model"], r["requests"]) for r in rows] == [
        (None, None, "o3", 1),
        ("search", "alice", "gpt-4o", 2),
        ("search", "bob", "o3", 1),
    ]
    by_team = get(api, key, group_by="team", **window())
    assert by_team["group_by"] == ["team"]
    assert [(r["team"], r["requests"]) for r in by_team["rows"]] == [(None, 1), ("search", 3)]
    assert "user" not in by_team["rows"][0] and "model" not in by_team["rows"][0]


def test_day_granularity_adds_up_the_utc_day(api, org, key, make_event):
    today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    for at in (yesterday + timedelta(hours=1), yesterday + timedelta(hours=23, minutes=59)):
        make_event(org, started_at=at, cost="1.5")
    make_event(org, started_at=today + timedelta(minutes=1), cost="1")

    body = get(
        api,
        key,
        granularity="day",
        **{"from": iso(yesterday), "to": iso(today + timedelta(days=1))},
    )

    assert [(r["period_start"], r["requests"], r["cost_usd"]) for r in body["rows"]] == [
        (iso(yesterday), 2, "3"),
        (iso(today), 1, "1"),
    ]


@pytest.mark.parametrize(
    ("time_zone", "change"),
    [
        # Midnight twice (1 Nov starts at the first 00:00, 04:00Z) and skipped
        # (8 Mar starts at 01:00, 05:00Z).
        pytest.param("America/Havana", date(2026, 11, 1), id="havana-00-twice"),
        pytest.param("America/Havana", date(2026, 3, 8), id="havana-no-00"),
        pytest.param("America/Santiago", date(2026, 9, 6), id="santiago-no-00"),
        pytest.param("Asia/Beirut", date(2026, 10, 24), id="beirut-23-twice"),
    ],
)
def test_local_days_equal_the_events_of_each_local_date(
    api, make_org, make_key, make_event, time_zone, change
):
    """Days in a time zone whose clock changes at midnight: each starts at the
    first instant of its date, and sums exactly the events of that date as
    zoneinfo reads it, rolled up or not."""
    org = make_org("havana", time_zone=time_zone)
    key = make_key(org)
    zone = ZoneInfo(time_zone)

    def first_instant(day: date) -> datetime:
        # Fold 0: the earlier of two midnights; a skipped one read with the
        # offset before the change, which is the instant the day begins.
        return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)

    start, end = (
        first_instant(change - timedelta(days=2)),
        first_instant(change + timedelta(days=3)),
    )
    at, n = start, 0
    while at < end:  # an event every 20 minutes, every other one aggregated
        n += 1
        make_event(
            org,
            started_at=at,
            cost=f"0.{n:04d}",
            received_at=LONG_AGO if n % 2 else None,
        )
        at += timedelta(minutes=20)
    run("aggregate_usage")
    make_event(org, started_at=first_instant(change) + timedelta(minutes=59), cost="7")

    body = get(
        api, key, granularity="day", time_zone=time_zone, **{"from": iso(start), "to": iso(end)}
    )

    want: dict[str, list] = defaultdict(lambda: [0, Decimal(0)])
    for e in RequestEvent.objects.filter(org=org):
        day = want[iso(first_instant(e.started_at.astimezone(zone).date()))]
        day[0] += 1
        day[1] += e.cost_usd
    assert body["time_zone"] == time_zone
    assert [(r["period_start"], r["requests"], Decimal(r["cost_usd"])) for r in body["rows"]] == [
        (day, requests, cost) for day, (requests, cost) in sorted(want.items())
    ]
    assert len(body["rows"]) == 5


def test_days_are_utc_days_unless_a_time_zone_is_asked(api, org, key, make_event):
    make_event(org, started_at=datetime(2026, 11, 1, 4, 30, tzinfo=UTC))
    params = {"granularity": "day", "from": "2026-10-31T00:00:00Z", "to": "2026-11-02T00:00:00Z"}

    utc = get(api, key, **params)
    havana = get(api, key, time_zone="America/Havana", **params)

    assert (utc["time_zone"], [r["period_start"] for r in utc["rows"]]) == (
        "UTC",
        ["2026-11-01T00:00:00Z"],
    )
    assert [r["period_start"] for r in havana["rows"]] == ["2026-11-01T04:00:00Z"]


def test_range_is_widened_to_whole_hours(api, org, key, make_event):
    make_event(org, started_at=hours_ago(3, minutes=5))

    body = get(
        api, key, **{"from": iso(hours_ago(3, minutes=30)), "to": iso(hours_ago(2, minutes=1))}
    )

    assert (body["from"], body["to"]) == (iso(hours_ago(3)), iso(hours_ago(1)))
    assert totals(body)[0] == 1


def test_default_range_is_the_last_24_hours(api, org, key, make_event):
    make_event(org, started_at=timezone.now() - timedelta(minutes=5))
    make_event(org, started_at=timezone.now() - timedelta(hours=30))

    body = get(api, key)

    end = datetime.fromisoformat(body["to"])
    assert end - datetime.fromisoformat(body["from"]) == timedelta(hours=24)
    assert timezone.now() <= end <= timezone.now() + timedelta(hours=1)
    assert totals(body)[0] == 1


def test_offset_whose_plus_was_not_url_encoded(api, org, key, make_event):
    make_event(org, started_at=hours_ago(2))
    start = hours_ago(3).astimezone(timezone.get_fixed_timezone(120)).isoformat()

    response = api.get(
        f"{USAGE}?from={start}&to={iso(hours_ago(-1))}", headers=auth(key)
    )  # '+02:00' arrives as ' 02:00'

    assert response.status_code == 200, response.text
    assert response.json()["from"] == iso(hours_ago(3))


# --- Exact and current: rollups plus the raw tail -----------------------------------


def test_aggregated_and_not_yet_aggregated_events_count_once(api, org, key, make_event):
    make_event(org, started_at=hours_ago(5), received_at=LONG_AGO, cost="0.1")
    make_event(org, started_at=hours_ago(3), received_at=LONG_AGO, cost="0.2")
    # Received just now: in the rollups after this run, but inside the lag.
    make_event(org, started_at=hours_ago(3, minutes=1), cost="0.3")
    run("aggregate_usage")
    # Not aggregated at all: a late event for an aggregated hour, and a new one.
    make_event(org, started_at=hours_ago(5, minutes=30), cost="0.4")
    make_event(org, started_at=hours_ago(0, minutes=1), cost="0.5")

    body = get(api, key, **window())

    assert totals(body) == (5, Decimal("1.5"))
    assert [(r["period_start"], r["cost_usd"]) for r in body["rows"]] == [
        (iso(hours_ago(5)), "0.5"),
        (iso(hours_ago(3)), "0.5"),
        (iso(hours_ago(0)), "0.5"),
    ]


def test_never_aggregated_usage_comes_from_raw_events(api, org, key, make_event):
    make_event(org, started_at=hours_ago(4), received_at=LONG_AGO, cost="0.25")

    assert totals(get(api, key, **window())) == (1, Decimal("0.25"))


def test_aggregated_hours_are_read_from_the_rollups(api, org, key, make_event):
    """After pruning, the rollups are all there is of an hour."""
    make_event(
        org,
        started_at=timezone.now() - timedelta(days=100),
        received_at=timezone.now() - timedelta(days=99),
        cost="0.7",
    )
    run("aggregate_usage")
    run("prune_events", "--older-than", "90d")
    assert not RequestEvent.objects.exists()

    start = timezone.now() - timedelta(days=101)
    body = get(api, key, **{"from": iso(start), "to": iso(start + timedelta(days=2))})

    assert totals(body) == (1, Decimal("0.7"))


def test_a_late_event_in_a_pruned_hour_does_not_hide_the_rollup(api, org, key, make_event):
    started = timezone.now() - timedelta(days=100)
    make_event(org, started_at=started, received_at=timezone.now() - timedelta(days=99), cost="0.7")
    run("aggregate_usage")
    run("prune_events", "--older-than", "90d")
    make_event(org, started_at=started + timedelta(seconds=1), cost="5")

    start = timezone.now() - timedelta(days=101)
    body = get(api, key, **{"from": iso(start), "to": iso(start + timedelta(days=2))})

    # The hour's rollup, not the lone late event (it is not rolled up either).
    assert totals(body) == (1, Decimal("0.7"))


# --- CSV ---------------------------------------------------------------------------


def test_csv_streams_a_header_and_the_rows(api, server, org, key, make_event):
    make_event(org, team="search", model="gpt-4o", started_at=hours_ago(2), cost="0.0004125")
    make_event(org, team="support", model="o3", started_at=hours_ago(2), cost="1")

    response = api.get(
        USAGE, params={"format": "csv", "group_by": "team,model", **window()}, headers=auth(key)
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    assert "content-length" not in response.headers  # streamed
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows == [
        [
            "period_start",
            "team",
            "model",
            "requests",
            "errors",
            "unpriced_requests",
            "input_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "cost_usd",
        ],
        [
            iso(hours_ago(2)),
            "search",
            "gpt-4o",
            "1",
            "0",
            "0",
            "100",
            "0",
            "0",
            "50",
            "0",
            "0.0004125",
        ],
        [iso(hours_ago(2)), "support", "o3", "1", "0", "0", "100", "0", "0", "50", "0", "1"],
    ]
    # Django would have buffered a sync iterator whole under ASGI, saying so.
    assert "must consume synchronous iterators" not in server.log()


def test_csv_of_many_rows_arrives_whole(api, org, key, make_event):
    for i in range(1200):
        make_event(org, user=f"user{i:04}", started_at=hours_ago(2))

    response = api.get(
        USAGE, params={"format": "csv", "group_by": "user", **window()}, headers=auth(key)
    )

    rows = list(csv.reader(io.StringIO(response.text)))
    assert len(rows) == 1201
    assert [r[1] for r in rows[1:]] == [f"user{i:04}" for i in range(1200)]


def test_csv_cells_cannot_become_spreadsheet_formulas(api, org, key, make_event):
    make_event(org, user='=HYPERLINK("http://evil")', started_at=hours_ago(2))

    response = api.get(
        USAGE, params={"format": "csv", "group_by": "user", **window()}, headers=auth(key)
    )

    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[1][1] == '\'=HYPERLINK("http://evil")'


def test_empty_csv_has_the_header_only(api, org, key):
    response = api.get(USAGE, params={"format": "csv"}, headers=auth(key))

    assert response.status_code == 200
    assert response.text.splitlines() == [
        "period_start,requests,errors,unpriced_requests,input_tokens,cache_read_tokens,"
        "cache_write_tokens,output_tokens,reasoning_tokens,cost_usd"
    ]


# --- Who sees what -----------------------------------------------------------------


def test_another_orgs_usage_is_never_visible(api, make_org, make_key, make_event):
    acme, globex = make_org("acme"), make_org("globex")
    make_event(acme, team="search", started_at=hours_ago(2), cost="1")
    make_event(globex, team="search", started_at=hours_ago(2), cost="7")
    make_event(globex, team="search", started_at=hours_ago(3), received_at=LONG_AGO, cost="7")
    run("aggregate_usage")

    acme_body = get(api, make_key(acme), group_by="team", **window())
    globex_body = get(api, make_key(globex, team="search"), group_by="team", **window())

    assert totals(acme_body) == (1, Decimal("1"))
    assert totals(globex_body) == (2, Decimal("14"))


def test_a_team_limited_key_sees_its_team_only(api, org, make_key, make_event):
    make_event(org, team="search", started_at=hours_ago(2), received_at=LONG_AGO, cost="1")
    make_event(org, team="support", started_at=hours_ago(2), received_at=LONG_AGO, cost="2")
    make_event(org, team=None, started_at=hours_ago(2), received_at=LONG_AGO, cost="4")
    run("aggregate_usage")
    make_event(org, team="support", started_at=hours_ago(1), cost="8")
    make_event(org, team="search", started_at=hours_ago(1), cost="16")

    body = get(api, make_key(org, team="search"), group_by="team", **window())

    assert {r["team"] for r in body["rows"]} == {"search"}
    assert totals(body) == (2, Decimal("17"))
    assert totals(get(api, make_key(org), **window())) == (5, Decimal("31"))


def test_without_a_key_is_401(api, org):
    assert_error(api.get(USAGE), 401, "unauthenticated")
    assert_error(api.get(USAGE, headers={"Authorization": "Bearer nope"}), 401, "unauthenticated")


def test_a_revoked_key_is_401(api, org, key):
    api_key_revoke(key=ApiKey.objects.get(lookup_id=key.split("_")[1]), actor=SYSTEM)

    assert_error(api.get(USAGE, headers=auth(key)), 401, "unauthenticated")


def test_a_wrong_secret_is_401_and_does_not_count_as_a_use(api, org, key):
    lookup_id = key.split("_")[1]
    forged = f"tg_{lookup_id}_{'A' * 43}"

    assert_error(api.get(USAGE, headers=auth(forged)), 401, "unauthenticated")
    assert ApiKey.objects.get(lookup_id=lookup_id).last_used_at is None

    get(api, key)
    assert ApiKey.objects.get(lookup_id=lookup_id).last_used_at is not None


def test_an_unreachable_database_is_503_in_the_error_shape(live_server_factory):
    down = live_server_factory(DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    key = "tg_0123456789ab_" + "A" * 43

    response = httpx.get(down.url + USAGE, headers=auth(key), timeout=10)

    assert_error(response, 503, "store_unavailable")


def test_other_methods_are_405(api, key):
    assert_error(api.post(USAGE, headers=auth(key)), 405, "method_not_allowed")


# --- Bad parameters ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01T00:00:00Z"}, "to"),
        ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "to"),
        ({"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "to"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
        ({"to": "9999-12-31T23:30:00Z"}, "to"),
        ({"to": "0001-01-01T05:00:00Z"}, "to"),
        ({"from": "0001-01-01T00:30:00+01:00"}, "from"),
        ({"granularity": "week"}, "granularity"),
        ({"format": "xml"}, "format"),
        ({"group_by": "team,provider"}, "group_by"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({"time_zone": "localtime"}, "time_zone"),
        ({"time_zone": "Europe/" + "x" * 5000}, "time_zone"),
        # Python 3.11's fromisoformat stops reading at a NUL.
        ({"from": "2026-11-01T00:00:00Z\x00junk"}, "from"),
        ({"to": "2026-11-01\x00"}, "to"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(api, key, params, field):
    response = api.get(USAGE, params=params, headers=auth(key))

    assert_error(response, 422, "invalid_field", field)


def test_rollups_are_untouched_by_reading(api, org, key, make_event):
    make_event(org, started_at=hours_ago(2))
    run("aggregate_usage")
    before = list(HourlyRollup.objects.values())

    get(api, key, format="json", **window())

    assert list(HourlyRollup.objects.values()) == before


def test_too_many_parameters_is_400_in_the_error_shape(api, key):
    # Django refuses more than DATA_UPLOAD_MAX_NUMBER_FIELDS (was an HTML page).
    query = "&".join(f"p{i}=1" for i in range(1001))

    response = api.get(f"{USAGE}?{query}", headers=auth(key))

    assert_error(response, 400, "malformed_query")


def test_a_range_in_year_one_is_written_with_four_digits(api, key):
    response = api.get(
        USAGE,
        params={"from": "0001-01-01T00:00:00Z", "to": "0001-01-01T05:00:00Z"},
        headers=auth(key),
    )

    assert response.status_code == 200, response.text
    assert (response.json()["from"], response.json()["to"]) == (
        "0001-01-01T00:00:00Z",
        "0001-01-01T05:00:00Z",
    )
