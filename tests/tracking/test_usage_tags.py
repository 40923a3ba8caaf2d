"""Reporting by tag through the real server: report_tags on PATCH /v1/org,
GET /v1/usage?group_by=tag:NAME (raw before the name is built, rollups
after, pruned hours under null) and the chargeback report, whose contents
equal the sums of the raw events."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from budgets.models import AuditEntry
from tests.budgets.test_webhook_targets import _org_form
from tests.conftest import assert_error, auth
from tests.tracking.conftest import hours_ago, run
from tests.tracking.test_usage import iso, window
from tracking.models import RequestEvent, TagRollup
from tracking.services import rollups_refresh

USAGE = "/v1/usage"
CHARGEBACK = "/v1/reports/chargeback"


def patch_org(api, admin_key: str, **settings):
    return api.patch("/v1/org", json=settings, headers=auth(admin_key))


def mark(org, *names: str) -> None:
    org.report_tags = list(names)
    org.save(update_fields=["report_tags"])


def by_tag(api, key, **params) -> dict:
    response = api.get(USAGE, params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


def seed(org, make_event) -> None:
    for hours, customer, team, cost in [
        (5, "acme", "search", "0.1000000001"),
        (5, "acme", "support", "0.2"),
        (5, "globex", "search", "0.0000000007"),
        (3, None, "search", "1.5"),
        (3, "acme", None, "0.25"),
        (1, '=HYPERLINK("x")', "search", "0.01"),
    ]:
        make_event(
            org,
            team=team,
            started_at=hours_ago(hours, minutes=7),
            cost=cost,
            tags={"customer": customer, "env": "prod"} if customer else {"env": "prod"},
        )


def raw_totals(org, name: str, *, by_team: bool = False) -> dict:
    sums: dict = defaultdict(lambda: [0, Decimal(0)])
    for e in RequestEvent.objects.filter(org=org).select_related("team"):
        group = (e.team.slug if e.team else None, e.tags.get(name)) if by_team else e.tags.get(name)
        sums[group][0] += 1
        sums[group][1] += e.cost_usd
    return {k: tuple(v) for k, v in sums.items()}


def answer_totals(body: dict, *, by_team: bool = False) -> dict:
    sums: dict = defaultdict(lambda: [0, Decimal(0)])
    for row in body["rows"]:
        group = (row["team"], row["tag"]) if by_team else row["tag"]
        sums[group][0] += row["requests"]
        sums[group][1] += Decimal(row["cost_usd"])
    return {k: tuple(v) for k, v in sums.items()}


# --- report_tags on the org ----------------------------------------------------------


def test_patch_org_sets_report_tags_audited(api, org, admin_key):
    response = patch_org(api, admin_key, report_tags=["customer", "feature", "customer"])

    assert response.status_code == 200, response.text
    assert response.json()["organization"]["report_tags"] == ["customer", "feature"]
    entry = AuditEntry.objects.get(object_type="organization", action="update")
    assert (entry.old["report_tags"], entry.new["report_tags"]) == ([], ["customer", "feature"])
    got = api.get("/v1/org", headers=auth(admin_key)).json()["organization"]
    assert got["report_tags"] == ["customer", "feature"]


@pytest.mark.parametrize(
    "value",
    ["customer", ["a,b"], ["a b"], ["team=x"], [""], [7], ["x" * 65], [f"t{i}" for i in range(11)]],
)
def test_patch_org_refuses_bad_report_tags_and_writes_nothing(api, org, admin_key, value):
    assert_error(patch_org(api, admin_key, report_tags=value), 422, "invalid_field", "report_tags")
    org.refresh_from_db()
    assert org.report_tags == []
    assert not AuditEntry.objects.filter(object_type="organization", action="update").exists()


# --- GET /v1/usage?group_by=tag:NAME --------------------------------------------------


def test_group_by_tag_is_exact_before_and_after_the_name_is_built(
    api, org, key, make_event, no_lag
):
    seed(org, make_event)
    mark(org, "customer")
    expected = raw_totals(org, "customer")
    assert None in expected and "acme" in expected

    # Not built yet: read from the raw events.
    before = by_tag(api, key, group_by="tag:customer", **window())
    assert before["group_by"] == ["tag:customer"]
    assert answer_totals(before) == expected

    rollups_refresh()
    assert TagRollup.objects.filter(org=org, name="customer").exists()
    after = by_tag(api, key, group_by="tag:customer", **window())
    assert after["rows"] == before["rows"]

    # A late event goes to the raw tail, then into the rollups.
    make_event(org, started_at=hours_ago(5, minutes=30), cost="3", tags={"customer": "acme"})
    expected = raw_totals(org, "customer")
    assert answer_totals(by_tag(api, key, group_by="tag:customer", **window())) == expected
    rollups_refresh()
    assert answer_totals(by_tag(api, key, group_by="tag:customer", **window())) == expected


def test_group_by_tag_combines_with_team_and_model_by_day(api, org, key, make_event, no_lag):
    seed(org, make_event)
    mark(org, "customer")
    rollups_refresh()

    body = by_tag(
        api, key, group_by="model,tag:customer,team", granularity="day", **window(hours_back=48)
    )

    assert body["group_by"] == ["team", "tag:customer", "model"]
    assert set(body["rows"][0]) >= {"team", "tag", "model", "cost_usd", "input_tokens"}
    assert "user" not in body["rows"][0]
    assert answer_totals(body, by_team=True) == raw_totals(org, "customer", by_team=True)


def test_pruned_hours_before_a_name_is_built_count_under_null(api, org, key, make_event, no_lag):
    make_event(org, started_at=hours_ago(80), cost="7", tags={"customer": "acme"})
    make_event(org, started_at=hours_ago(2), cost="1", tags={"customer": "acme"})
    rollups_refresh()
    run("prune_events", "--older-than", "2d")
    mark(org, "customer")
    rollups_refresh()

    body = by_tag(
        api, key, group_by="tag:customer", granularity="day", **{"from": iso(hours_ago(100))}
    )

    assert body["tags_from"] == iso(hours_ago(48))
    assert answer_totals(body) == {None: (1, Decimal(7)), "acme": (1, Decimal(1))}


def test_group_by_tag_refuses_names_not_reported_on(api, org, key):
    mark(org, "customer")
    error = assert_error(
        api.get(USAGE, params={"group_by": "tag:feature"}, headers=auth(key)),
        422,
        "invalid_field",
        "group_by",
    )
    assert "report_tags" in error["message"] and "PATCH /v1/org" in error["message"]
    for group_by in ("tag:", "tag:customer,tag:env", "tag:customer,user", "tags:customer"):
        assert_error(
            api.get(USAGE, params={"group_by": group_by}, headers=auth(key)),
            422,
            "invalid_field",
            "group_by",
        )


def test_group_by_tag_csv_escapes_formulas_and_names_the_column(api, org, key, make_event, no_lag):
    seed(org, make_event)
    mark(org, "customer")
    rollups_refresh()

    response = api.get(
        USAGE, params={"group_by": "tag:customer", "format": "csv", **window()}, headers=auth(key)
    )

    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:2] == ["period_start", "tag:customer"]
    values = {row[1] for row in rows[1:]}
    assert '\'=HYPERLINK("x")' in values and "" in values and "acme" in values


def test_team_limited_keys_see_their_team_only(api, org, make_key, make_event, no_lag):
    seed(org, make_event)
    mark(org, "customer")
    rollups_refresh()
    team_key = make_key(org, team="support")

    body = by_tag(api, team_key, group_by="tag:customer", **window())

    assert answer_totals(body) == {"acme": (1, Decimal("0.2"))}


# --- Chargeback ---------------------------------------------------------------------


def last_month_events(org, make_event, tz: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(tz)
    now = datetime.now(zone)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    for day, hour, customer, team, cost in [
        (1, 0, "acme", "search", "0.1234567891"),
        (1, 0, "acme", "search", "1"),
        (3, 12, "globex", "search", "2.5"),
        (10, 5, "acme", "support", "0.75"),
        (20, 23, None, "support", "4"),
    ]:
        started = last_month.replace(day=day, hour=hour, minute=30)
        make_event(
            org,
            team=team,
            started_at=started,
            cost=cost,
            input_tokens=100 * day,
            output_tokens=day,
            tags={"customer": customer} if customer else {},
        )
    # Outside last month on both sides: not in the report.
    make_event(
        org, started_at=last_month - timedelta(minutes=1), cost="100", tags={"customer": "acme"}
    )
    make_event(org, started_at=this_month, cost="200", tags={"customer": "acme"})
    return last_month, this_month


def db_chargeback(org, start: datetime, end: datetime) -> dict:
    sums: dict = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    events = RequestEvent.objects.filter(org=org, started_at__gte=start, started_at__lt=end)
    for e in events.select_related("team"):
        row = sums[(e.team.slug if e.team else "", e.tags.get("customer") or "")]
        row[0] += 1
        row[1] += e.input_tokens
        row[2] += e.output_tokens
        row[3] += e.cost_usd
    return {k: tuple(v) for k, v in sums.items()}


def csv_chargeback(text: str) -> dict:
    rows = list(csv.DictReader(io.StringIO(text)))
    return {
        (r["team"], r["tag:customer"]): (
            int(r["requests"]),
            int(r["input_tokens"]),
            int(r["output_tokens"]),
            Decimal(r["cost_usd"]),
        )
        for r in rows
    }


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_chargeback_csv_equals_the_raw_events_of_last_month(
    api, make_org, make_key, make_event, no_lag, tz
):
    org = make_org(time_zone=tz)
    mark(org, "customer")
    key = make_key(org)
    start, end = last_month_events(org, make_event, tz)
    rollups_refresh()

    response = api.get(CHARGEBACK, params={"tag": "customer"}, headers=auth(key))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert f"{start:%Y-%m}" in response.headers["content-disposition"]
    got = csv_chargeback(response.text)
    assert got == db_chargeback(org, start, end)
    assert len(got) == 4
    periods = {row["period_start"] for row in csv.DictReader(io.StringIO(response.text))}
    assert periods == {iso(start)}

    named = api.get(
        CHARGEBACK,
        params={"tag": "customer", "month": f"{start:%Y-%m}", "format": "json"},
        headers=auth(key),
    )
    assert named.status_code == 200
    assert named.json()["granularity"] == "month"
    assert sum(Decimal(r["cost_usd"]) for r in named.json()["rows"]) == sum(
        v[3] for v in got.values()
    )


def test_chargeback_refuses_bad_parameters(api, org, key):
    mark(org, "customer")
    assert_error(api.get(CHARGEBACK, headers=auth(key)), 422, "invalid_field", "tag")
    assert_error(
        api.get(CHARGEBACK, params={"tag": "feature"}, headers=auth(key)),
        422,
        "invalid_field",
        "tag",
    )
    for month in ("2026-13", "2026-1", "last", "0001-01"):
        assert_error(
            api.get(CHARGEBACK, params={"tag": "customer", "month": month}, headers=auth(key)),
            422,
            "invalid_field",
            "month",
        )
    assert api.get(CHARGEBACK, params={"tag": "customer"}).status_code == 401


def test_report_tags_are_set_in_admin_validated_and_audited(client, make_org):
    client.force_login(get_user_model().objects.create_superuser("boss", "", "pw-for-tests"))
    org = make_org("acme")
    url = reverse("admin:budgets_organization_change", args=[org.pk])

    refused = client.post(url, {**_org_form(org, ""), "report_tags": "customer,a b"})
    assert refused.status_code == 200  # the form again, with the error
    assert "not a reportable tag name" in refused.content.decode()
    assert not AuditEntry.objects.filter(object_type="organization", action="update").exists()

    saved = client.post(url, {**_org_form(org, ""), "report_tags": "feature,customer"})
    assert saved.status_code == 302, saved.content.decode()[:2000]
    org.refresh_from_db()
    assert org.report_tags == ["customer", "feature"]
    entry = AuditEntry.objects.get(object_type="organization", action="update")
    assert entry.new["report_tags"] == ["customer", "feature"]
