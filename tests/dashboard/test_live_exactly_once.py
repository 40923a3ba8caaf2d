"""Live updates reach a page exactly once, also when its summary was computed
before its socket joined (a summary kept for DASHBOARD_SUMMARY_MAX_AGE_MS).

Each recording names its transaction (`xid`), each summary statement the
snapshot it read; `live.sees` (and the page's `sees`) tell from them whether
a summary already counted a recording. A kept summary carries the updates
heard since it was computed that it did not see (`updates`).
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import psycopg
import pytest

from dashboard import live
from tests.conftest import auth
from tests.dashboard.conftest import SUMMARY, cookie_header, event, record
from tests.dashboard.timing import summary_timing


def recording(org, event_id: str, cost: str) -> list[dict]:
    """One event as tollgate_record_events takes it (ingest.validate's shape)."""
    return [
        {
            "idx": 0,
            "event_id": event_id,
            "team": None,
            "user": None,
            "model": "m",
            "provider": None,
            "input_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "output_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": cost,
            "latency_ms": None,
            "status": "ok",
            "started_at": None,
            "reservation_id": None,
            "tags": {},
            "payload_hash": f"h-{event_id}",
        }
    ]


def summary_statements(conn: psycopg.Connection, org) -> tuple[dict, dict]:
    """Both statements of GET /v1/dashboard/summary, each as the server runs it
    (its own autocommit statement)."""
    # Range 24h; no custom dates, team, user, model or tag.
    args = (org.id, org.time_zone, "24h", None, None, None, None, None, None, None)
    summary = conn.execute(
        "SELECT tollgate_dashboard_summary(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())", args
    ).fetchone()[0]
    breakdown = conn.execute(
        "SELECT tollgate_dashboard_breakdown(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())", args
    ).fetchone()[0]
    return summary["summary"], breakdown


def test_snapshots_tell_which_recordings_a_summary_saw(org, test_database_url):
    with (
        psycopg.connect(test_database_url, autocommit=True) as reader,
        psycopg.connect(test_database_url) as writer,
    ):
        before = writer.execute(
            "SELECT tollgate_record_events(%s, false, %s::jsonb)",
            (org.id, json.dumps(recording(org, "seen", "2"))),
        ).fetchone()[0]
        writer.commit()
        in_flight = writer.execute(
            "SELECT tollgate_record_events(%s, false, %s::jsonb)",
            (org.id, json.dumps(recording(org, "unseen", "0.5"))),
        ).fetchone()[0]
        assert in_flight["xid"] == writer.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        assert int(in_flight["xid"]) > int(before["xid"])

        # Read while "unseen" is being recorded: counts "seen" only.
        kpis, chart = summary_statements(reader, org)
        assert kpis["kpis"]["spend_usd"] == "2"
        for snapshot in (kpis["snapshot"], chart["chart_snapshot"]):
            assert live.sees(snapshot, before["xid"])
            assert not live.sees(snapshot, in_flight["xid"])  # in progress
        writer.commit()

        later, later_chart = summary_statements(reader, org)
        assert later["kpis"]["spend_usd"] == "2.5"
        assert live.sees(later["snapshot"], in_flight["xid"])
        assert live.sees(later_chart["chart_snapshot"], in_flight["xid"])
        # The first summary still did not see it: a page showing that one adds it.
        assert not live.sees(kpis["snapshot"], in_flight["xid"])

        # A transaction that began after a snapshot was taken is not in it either.
        newer = reader.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        assert not live.sees(later["snapshot"], newer)


@pytest.mark.parametrize(
    ("snapshot", "xid", "seen"),
    [
        ("100:105:101,103", "99", True),  # ended before every running one
        ("100:105:101,103", "100", True),  # xmin itself is running only if listed
        ("100:105:100,103", "100", False),
        ("100:105:101,103", "102", True),  # between, not running
        ("100:105:101,103", "103", False),  # running then
        ("100:105:101,103", "105", False),  # began after
        ("100:100:", "99", True),
        ("100:100:", "100", False),
        ("100:100:", None, False),  # no transaction named: not known to be seen
        (None, "5", False),
    ],
)
def test_sees_reads_postgresqls_snapshot_text(snapshot, xid, seen):
    assert live.sees(snapshot, xid) is seen


@pytest.fixture(scope="module")
def keeping_server(live_server_factory):
    return live_server_factory(DASHBOARD_SUMMARY_MAX_AGE_MS="60000")


def test_a_kept_summary_brings_the_updates_it_did_not_see(keeping_server, org, key, make_user):
    session = cookie_header(make_user("ann", org=org))
    with httpx.Client(base_url=keeping_server.url, timeout=10) as client:
        record(client, key, [event("before", cost="1", team="search")])
        first = client.get(SUMMARY, params={"range": "24h"}, headers=session)
        assert summary_timing(first.headers) == 'summary;desc="computed"'
        assert first.json()["kpis"]["spend_usd"] == "1"
        # "before" may reach the summary's keeper after it joined: it is left
        # out all the same, because the summary saw it.
        assert first.json()["updates"] == []

        record(client, key, [event("after", cost="0.5", team="search")])
        deadline = time.monotonic() + 5
        while True:
            kept = client.get(SUMMARY, params={"range": "24h"}, headers=session)
            body = kept.json()
            if body["updates"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        by_key = client.get(SUMMARY, params={"range": "24h"}, headers=auth(key))

    assert summary_timing(kept.headers) == 'summary;desc="reused"'
    assert body["kpis"]["spend_usd"] == "1"  # computed before "after"
    [update] = body["updates"]
    assert update["type"] == "spend" and update["id"] and update["covers"]
    assert [e["id"] for e in update["events"]] == ["after"]
    [total] = update["totals"]
    assert total["team"] == "search" and Decimal(total["cost_usd"]) == Decimal("0.5")
    # Seen by neither statement: named by no transaction (the page adds it).
    assert total["xid"] is None
    assert not live.sees(body["snapshot"], update["events"][0]["xid"])
    # API keys cannot follow /ws/spend/: no updates for them.
    assert summary_timing(by_key.headers) == 'summary;desc="reused"'
    assert "updates" not in by_key.json()
    assert by_key.json()["snapshot"] == body["snapshot"]


def test_unseen_adds_up_what_a_summary_did_not_see():
    def total(xid: str, team: str, cost: str) -> dict:
        return {
            "xid": xid,
            "team": team,
            "user": None,
            "model": "m",
            "hour": "2026-11-23T05:00:00Z",
            "requests": 1,
            "errors": 0,
            "unpriced_requests": 0,
            "cost_usd": cost,
        }

    def message(id_: str, xid: str, team: str, cost: str, budgets: str) -> dict:
        started = f"2026-11-23T05:00:{int(xid) % 60:02d}Z"
        event = {"id": f"e{xid}", "xid": xid, "started_at": started, "team": team}
        return {
            "id": id_,
            "events": [event],
            "totals": [total(xid, team, cost)],
            "budgets": budgets,
        }

    # Statement one saw 10 and 12; statement two (a moment later) also 13.
    snapshots = ("11:14:11,13", "11:14:11")
    heard = [
        message("s.2", "10", "search", "1", "b-a"),  # seen by both: left out
        message("s.3", "11", "search", "0.25", "b-b"),  # seen by neither
        message("s.4", "13", "search", "0.5", "b-c"),  # seen by statement two only
        message("p.1", "14", "search", "0.75", "b-d"),  # began after both
        message("s.7", "12", "ads", "3", "b-e"),  # seen by both
    ]
    unseen = live.Unseen(snapshots, since=100.0)
    assert unseen.message() is None
    # Heard before the statements started: cannot be news to them.
    unseen.fold([(1, 99.0, message("s.1", "15", "search", "9", "b-z"))])
    assert unseen.message() is None
    # Folded as they arrive; each message once, however often it is offered.
    numbered = [(n, 100.0 + n, m) for n, m in enumerate(heard, start=2)]
    unseen.fold(numbered[:3])
    unseen.fold(numbered)
    merged = unseen.message()
    # Two senders; "s.2"-"s.4" and "s.7" heard from one, "p.1" from the other.
    assert merged["covers"] == {"s": [[2, 4], [7, 7]], "p": [[1, 1]]}
    assert merged["budgets"] == "b-d"  # the newest with news
    assert [e["id"] for e in merged["events"]] == ["e14", "e13", "e11"]
    totals = {t["xid"]: (t["cost_usd"], t["requests"]) for t in merged["totals"]}
    assert totals == {None: ("1", 2), "13": ("0.5", 1)}


def test_names_the_summary_does_not_show_are_folded_together():
    def total(xid: str, team: str, user: str, model: str) -> dict:
        return {
            "xid": xid,
            "team": team,
            "user": user,
            "model": model,
            "hour": "2026-11-23T05:00:00Z",
            "requests": 1,
            "errors": 0,
            "unpriced_requests": 0,
            "cost_usd": "1",
        }

    def top(names: list[str]) -> list[dict]:
        return [{"id": name, "spend_usd": "1", "requests": 1} for name in names]

    teams = [f"t{i}" for i in range(10)]
    breakdown = {
        "chart": {
            "split_by": "team",
            "series": [
                {"key": "t0", "other": False},
                {"key": "t10", "other": False},  # stacked on its own, not in the top ten
                {"key": None, "other": True},
            ],
        },
        # Teams and users full (ten each), models not: every model counts.
        "top": {
            "teams": top(teams),
            "users": top([f"u{i}" for i in range(10)]),
            "models": top(["m"]),
        },
    }
    shown = live.Shown.of(breakdown, team=None)
    unseen = live.Unseen(("1:1:", "1:1:"), since=0.0, shown=shown)
    heard = [
        total("5", "t0", "u0", "m"),
        total("6", "t10", "u99", "m"),
        total("7", "t11", "u98", "m2"),
        total("8", "t12", "u97", "m2"),
    ]
    unseen.fold([(n, 1.0, {"id": f"s.{n}", "events": [], "totals": [t], "budgets": None})
                 for n, t in enumerate(heard, start=1)])  # fmt: skip
    rows = {(t["team"], t["user"], t["model"]): t["requests"] for t in unseen.message()["totals"]}
    assert rows == {("t0", "u0", "m"): 1, ("t10", False, "m"): 1, (False, False, "m2"): 2}

    # A team's page (the chart stacks models) gets that team's spend only,
    # and the budgets of an update with news of any team.
    assert live.Shown.of(breakdown, team="t3").teams is None
    team_page = live.Unseen(("1:1:", "1:1:"), since=0.0, shown=live.Shown.of(breakdown, "t10"))
    team_page.fold([(n, 1.0, {"id": f"s.{n}", "events": [], "totals": [t], "budgets": f"b{n}"})
                    for n, t in enumerate(heard, start=1)])  # fmt: skip
    update = team_page.message()
    assert [(t["team"], t["requests"]) for t in update["totals"]] == [("t10", 1)]
    assert update["budgets"] == "b4"
    # A top list that is not full holds everyone: nothing of it is folded.
    assert shown.models is None


def test_unseen_keeps_unpriced_names_the_totals_fold():
    """The unpriced card lists model names: a summary's `updates` keep each
    unpriced name, also one its top lists and chart leave out (folded to
    false in the totals), and only what the KPIs' snapshot did not see."""

    def recording(n: int, xid: str, team: str, model: str, cost: str) -> tuple:
        row = {"xid": xid, "team": team, "model": model, "hour": "2026-11-23T05:00:00Z"}
        total = {**row, "user": None, "requests": 1, "errors": 0, "unpriced_requests": 1,
                 "cost_usd": cost}  # fmt: skip
        message = {"id": f"s.{n}", "events": [], "totals": [total], "budgets": None,
                   "unpriced": [{**row, "requests": 1, "cost_usd": cost}]}  # fmt: skip
        return (n, 1.0, message)

    models = [f"m{i}" for i in range(10)]
    breakdown = {
        "chart": {"split_by": "team", "series": [{"key": "t", "other": False}]},
        "top": {
            "teams": [{"id": "t", "spend_usd": "1", "requests": 1}],
            "users": [],
            "models": [{"id": m, "spend_usd": "1", "requests": 1} for m in models],
        },
    }
    # The KPIs' statement saw 10; the chart's also 11.
    unseen = live.Unseen(("11:11:", "12:12:"), since=0.0, shown=live.Shown.of(breakdown, None))
    unseen.fold(
        [
            recording(1, "10", "t", "new-a", "9"),  # seen by the KPIs: left out
            recording(2, "11", "t", "new-b", "0.25"),
            recording(3, "12", "t", "new-b", "0.5"),
            recording(4, "12", "u", "new-c", "0.001"),
        ]
    )
    update = unseen.message()
    assert {t["model"] for t in update["totals"]} == {False}  # not in the full top ten
    unpriced = {(u["team"], u["model"]): (u["requests"], u["cost_usd"], u["xid"])
                for u in update["unpriced"]}  # fmt: skip
    assert unpriced == {("t", "new-b"): (2, "0.75", None), ("u", "new-c"): (1, "0.001", None)}

    team_page = live.Unseen(("11:11:", "12:12:"), since=0.0, shown=live.Shown.of(breakdown, "t"))
    team_page.fold([recording(4, "12", "u", "new-c", "0.001"), recording(5, "12", "t", "x", "1")])
    assert [u["model"] for u in team_page.message()["unpriced"]] == ["x"]


def test_unseen_keeps_only_the_user_and_model_a_filtered_summary_shows():
    """A summary narrowed to a user and a model carries in `updates` only the
    live spend, unpriced sums and events of that user and model."""

    def recording(n: int, user: str, model: str, cost: str) -> tuple:
        row = {"xid": "12", "team": "t", "user": user, "model": model,
               "hour": "2026-11-23T05:00:00Z"}  # fmt: skip
        total = {**row, "requests": 1, "errors": 0, "unpriced_requests": 1, "cost_usd": cost}
        started = {"started_at": "2026-11-23T05:00:01Z", "id": f"e{n}"}
        message = {"id": f"s.{n}", "events": [{**row, **started}], "totals": [total],
                   "budgets": [], "unpriced": [{**row, "requests": 1, "cost_usd": cost}]}  # fmt: skip
        return (n, 1.0, message)

    breakdown = {
        "chart": {"split_by": "team", "series": [{"key": "t", "other": False}]},
        "top": {"teams": [], "users": [], "models": []},
    }
    shown = live.Shown.of(breakdown, None, "alice", "gpt-4o")
    unseen = live.Unseen(("11:11:", "11:11:"), since=0.0, shown=shown)
    unseen.fold(
        [
            recording(1, "alice", "gpt-4o", "1"),
            recording(2, "alice", "o4-mini", "2"),
            recording(3, "bob", "gpt-4o", "4"),
            recording(4, "alice", "gpt-4o", "0.5"),
        ]
    )

    update = unseen.message()
    assert [(t["user"], t["model"], t["cost_usd"]) for t in update["totals"]] == [
        ("alice", "gpt-4o", "1.5")
    ]
    assert [(u["user"], u["cost_usd"]) for u in update["unpriced"]] == [("alice", "1.5")]
    assert sorted(e["id"] for e in update["events"]) == ["e1", "e4"]
    assert update["covers"] == {"s": [[1, 4]]}  # every message read, whatever it held
