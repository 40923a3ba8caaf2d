"""Tag budgets (scope `tag`, subject `name=value`) and model-filtered budgets
through the real server and database: managed and listed with filters, held
with the other budgets in the same statement when a request carries a
matching tag or model, counted from events by their tags and model, seeded
when created mid-period, and bad input refused whole."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection

from budgets.models import Alert, AuditEntry, Budget, BudgetWindow, Reservation
from budgets.services import alert_payload
from tests.conftest import assert_error, auth
from tests.tracking.test_record_events import only_result, post, today_event, today_window


def reserve(api, key: str, amount: str, **extra):
    body = {"team": "search", "user": "alice", "estimated_cost_usd": amount, **extra}
    return api.post("/v1/budget/reservations", json=body, headers=auth(key))


def put(api, admin_key: str, path: str, limit: str, **params):
    return api.put(
        f"/v1/budgets/{path}", params=params, json={"limit_usd": limit}, headers=auth(admin_key)
    )


def names(budgets: list[dict]) -> list[tuple]:
    return [(b["scope"], b["id"], b["model"], b["period"]) for b in budgets]


def test_put_lists_and_deletes_a_tag_budget_audited(api, org, admin_key):
    response = put(api, admin_key, "tag/customer=acme/day", "2.50")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["scope"], body["id"], body["model"], body["limit_usd"]) == (
        "tag",
        "customer=acme",
        None,
        "2.5",
    )
    assert Budget.objects.get().tag == "customer=acme"
    listed = api.get("/v1/budgets", headers=auth(admin_key)).json()["budgets"]
    assert names(listed) == [("tag", "customer=acme", None, "day")]
    entry = AuditEntry.objects.get(object_type="budget")
    assert (entry.object_id, entry.action) == ("tag/customer=acme/day", "create")

    deleted = api.delete("/v1/budgets/tag/customer=acme/day", headers=auth(admin_key))

    assert deleted.status_code == 204
    assert not Budget.objects.exists()
    assert AuditEntry.objects.filter(action="delete").count() == 1


def test_a_model_filter_makes_another_budget_of_the_same_subject(api, org, admin_key):
    assert put(api, admin_key, "team/research/day", "10").status_code == 200
    filtered = put(api, admin_key, "team/research/day", "2", model="Claude-Opus-*")

    assert filtered.status_code == 200, filtered.text
    assert filtered.json()["model"] == "claude-opus-*"  # stored lower-cased
    assert Budget.objects.count() == 2
    entry = AuditEntry.objects.filter(object_type="budget").order_by("id").last()
    assert entry.object_id == "team/research/day?model=claude-opus-*"
    assert entry.new["model"] == "claude-opus-*"

    # DELETE without ?model= deletes the unfiltered one only.
    assert api.delete("/v1/budgets/team/research/day", headers=auth(admin_key)).status_code == 204
    assert list(Budget.objects.values_list("model_filter", flat=True)) == ["claude-opus-*"]
    gone = api.delete(
        "/v1/budgets/team/research/day", params={"model": "claude-opus-*"}, headers=auth(admin_key)
    )
    assert gone.status_code == 204
    assert not Budget.objects.exists()


def test_list_filters_and_order(api, org, admin_key):
    for path, params in [
        ("tag/feature=summarize/day", {}),
        ("tag/customer=acme/day", {}),
        ("tag/customer=beta/month", {}),
        ("team/research/day", {"model": "claude-opus-*"}),
        ("team/research/day", {}),
        (f"org/{org.slug}/day", {}),
        ("user/alice/day", {}),
    ]:
        assert put(api, admin_key, path, "5", **params).status_code == 200

    def listed(**params) -> list[tuple]:
        response = api.get("/v1/budgets", params=params, headers=auth(admin_key))
        assert response.status_code == 200, response.text
        return names(response.json()["budgets"])

    # org, team, user, key, tag; unfiltered before model-filtered; then period.
    assert listed() == [
        ("org", org.slug, None, "day"),
        ("team", "research", None, "day"),
        ("team", "research", "claude-opus-*", "day"),
        ("user", "alice", None, "day"),
        ("tag", "customer=acme", None, "day"),
        ("tag", "customer=beta", None, "month"),
        ("tag", "feature=summarize", None, "day"),
    ]
    assert [b[1] for b in listed(scope="tag")] == [
        "customer=acme",
        "customer=beta",
        "feature=summarize",
    ]
    assert [b[1] for b in listed(tag="customer")] == ["customer=acme", "customer=beta"]
    assert [b[1] for b in listed(tag="customer=beta")] == ["customer=beta"]
    assert listed(team="research") == [
        ("team", "research", None, "day"),
        ("team", "research", "claude-opus-*", "day"),
    ]
    assert listed(model="claude-opus-*") == [("team", "research", "claude-opus-*", "day")]
    assert_error(
        api.get("/v1/budgets", params={"scope": "customer"}, headers=auth(admin_key)),
        422,
        "invalid_field",
        "scope",
    )
    assert_error(
        api.get("/v1/budgets", params={"model": "*opus"}, headers=auth(admin_key)),
        422,
        "invalid_field",
        "model",
    )


def test_tag_budgets_of_every_matching_tag_hold_with_the_others(
    api, org, key, admin_key, make_budget
):
    org_budget = make_budget(org, "100")
    assert put(api, admin_key, "tag/customer=acme/day", "1").status_code == 200
    assert put(api, admin_key, "tag/feature=summarize/day", "5").status_code == 200
    assert put(api, admin_key, "tag/customer=beta/day", "5").status_code == 200

    tags = {"customer": "acme", "feature": "summarize", "env": "prod"}
    held = reserve(api, key, "0.75", tags=tags)

    assert held.status_code == 201, held.text
    assert {(b["scope"], b["id"]) for b in held.json()["budgets"]} == {
        ("org", org.slug),
        ("tag", "customer=acme"),
        ("tag", "feature=summarize"),
    }
    reservation = Reservation.objects.get()
    assert reservation.tags == tags
    acme = Budget.objects.get(tag="customer=acme")
    assert today_window(acme).reserved == Decimal("0.75")
    assert today_window(org_budget).reserved == Decimal("0.75")
    assert today_window(Budget.objects.get(tag="customer=beta")).reserved == 0

    # The tightest applicable budget refuses, and the 402 names it; nothing held.
    denied = reserve(api, key, "0.5", tags={"customer": "acme"})

    error = assert_error(denied, 402, "budget_exceeded")
    assert (error["scope"], error["id"], error["model"]) == ("tag", "customer=acme", None)
    assert today_window(org_budget).reserved == Decimal("0.75")
    # Another customer's requests are not held on acme's budget.
    assert reserve(api, key, "0.5", tags={"customer": "beta"}).status_code == 201
    untagged = reserve(api, key, "0.5")
    assert untagged.status_code == 201
    assert Reservation.objects.get(pk=untagged.json()["reservation_id"]).tags is None


def test_a_model_filtered_budget_holds_only_matching_models(api, org, key, admin_key, make_budget):
    make_budget(org, "100")
    assert put(api, admin_key, "team/search/day", "1", model="claude-opus-*").status_code == 200
    assert put(api, admin_key, "team/search/day", "3", model="gpt-4o").status_code == 200
    opus = Budget.objects.get(model_filter="claude-opus-*")

    held = reserve(api, key, "0.75", model="Claude-Opus-4")

    assert held.status_code == 201, held.text
    assert {(b["scope"], b["model"]) for b in held.json()["budgets"]} == {
        ("org", None),
        ("team", "claude-opus-*"),
    }
    assert today_window(opus).reserved == Decimal("0.75")
    # Another model, and a hold naming no model, are not held on it.
    assert reserve(api, key, "0.75", model="claude-sonnet-4").status_code == 201
    assert reserve(api, key, "0.75").status_code == 201
    assert today_window(opus).reserved == Decimal("0.75")
    # gpt-4o is an exact name: gpt-4o-mini does not match it.
    assert reserve(api, key, "0.75", model="gpt-4o-mini").status_code == 201
    assert today_window(Budget.objects.get(model_filter="gpt-4o")).reserved == 0

    denied = reserve(api, key, "0.5", model="claude-opus-4-1")

    error = assert_error(denied, 402, "budget_exceeded")
    assert (error["scope"], error["id"], error["model"]) == ("team", "search", "claude-opus-*")
    assert "claude-opus-*" in error["message"]


def test_events_count_into_tag_and_model_filtered_budgets_by_their_tags_and_model(
    api, org, key, admin_key
):
    assert put(api, admin_key, "tag/customer=acme/day", "10").status_code == 200
    assert (
        put(api, admin_key, f"org/{org.slug}/day", "10", model="claude-opus-*").status_code == 200
    )
    acme = Budget.objects.get(scope="tag")
    opus = Budget.objects.get(scope="org")

    only_result(
        post(
            api,
            key,
            today_event("e-1", cost_usd="0.4", model="claude-opus-4", tags={"customer": "acme"}),
        )
    )
    only_result(post(api, key, today_event("e-2", cost_usd="0.2", tags={"customer": "beta"})))
    only_result(post(api, key, today_event("e-3", cost_usd="0.1", model="Claude-Opus-4")))

    assert today_window(acme).spent == Decimal("0.4")
    assert today_window(opus).spent == Decimal("0.5")


def test_an_event_settles_its_hold_on_the_windows_the_hold_was_taken_on(api, org, key, admin_key):
    assert put(api, admin_key, "tag/customer=acme/day", "10").status_code == 200
    acme = Budget.objects.get(scope="tag")
    hold = reserve(api, key, "0.5", tags={"customer": "acme"}).json()["reservation_id"]

    # The event carries no tag: it settles the hold (acme's window gives
    # back the hold) but its spend does not count into acme's budget.
    only_result(post(api, key, today_event("s-1", cost_usd="0.2", reservation_id=hold)))

    window = today_window(acme)
    assert (window.spent, window.reserved) == (Decimal("0"), Decimal("0"))


def test_tag_and_model_budgets_created_mid_period_start_with_their_spend_and_holds(
    api, org, key, admin_key
):
    only_result(
        post(api, key, today_event("m-1", cost_usd="0.4", model="claude-opus-4", tags={"c": "a"}))
    )
    only_result(post(api, key, today_event("m-2", cost_usd="0.7", tags={"c": "b"})))
    assert reserve(api, key, "0.25", tags={"c": "a"}, model="claude-opus-4").status_code == 201
    assert reserve(api, key, "0.5", tags={"c": "b"}).status_code == 201

    tag_body = put(api, admin_key, "tag/c=a/day", "5").json()
    model_body = put(api, admin_key, "team/search/day", "5", model="claude-opus-*").json()

    assert (tag_body["spent_usd"], tag_body["reserved_usd"]) == ("0.4", "0.25")
    assert (model_body["spent_usd"], model_body["reserved_usd"]) == ("0.4", "0.25")
    # The seeded hold leaves the new windows when it is released.
    hold = Reservation.objects.get(tags={"c": "a"})
    released = api.post(f"/v1/budget/reservations/{hold.pk}/release", headers=auth(key))
    assert released.status_code == 200, released.text
    for budget in Budget.objects.all():
        assert today_window(budget).reserved == Decimal("0")


def test_status_reads_the_budgets_of_a_model_and_tags(api, org, key, admin_key, make_budget):
    make_budget(org, "100")
    assert put(api, admin_key, "tag/customer=acme/day", "1").status_code == 200
    assert put(api, admin_key, "tag/feature=x/day", "1").status_code == 200
    assert put(api, admin_key, "team/search/day", "1", model="gpt-4o").status_code == 200

    response = api.get(
        "/v1/budget/status?team=search&model=gpt-4o&tag=customer=acme&tag=feature%3Dx",
        headers=auth(key),
    )

    assert response.status_code == 200, response.text
    assert names(response.json()["budgets"]) == [
        ("org", org.slug, None, "day"),
        ("team", "search", "gpt-4o", "day"),
        ("tag", "customer=acme", None, "day"),
        ("tag", "feature=x", None, "day"),
    ]
    plain = api.get("/v1/budget/status?team=search", headers=auth(key)).json()["budgets"]
    assert names(plain) == [("org", org.slug, None, "day")]
    assert_error(
        api.get("/v1/budget/status?tag=customer", headers=auth(key)), 422, "invalid_field", "tag"
    )


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("tag/customer/day", {}, "id"),  # no '='
        ("tag/=acme/day", {}, "id"),  # no name
        ("customer/acme/day", {}, "scope"),
        ("team/search/day", {"model": "*"}, "model"),
        ("team/search/day", {"model": "claude opus"}, "model"),
        ("team/search/day", {"model": "claude-*-opus"}, "model"),
    ],
)
def test_bad_budget_paths_and_patterns_write_nothing(api, org, admin_key, path, params, field):
    response = put(api, admin_key, path, "1", **params)

    assert_error(response, 422, "invalid_field", field)
    assert not Budget.objects.exists()
    assert not AuditEntry.objects.filter(object_type="budget").exists()


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        ({"a=b": "c"}, "tags.a=b"),  # '=' in a name would make name=value ambiguous
        ({"": "x"}, "tags."),
        ({"n": 1}, "tags.n"),
        ({f"t{i}": "x" for i in range(21)}, "tags"),
        (["customer=acme"], "tags"),
    ],
)
def test_bad_request_tags_are_refused_before_anything_is_held(
    api, org, key, make_budget, tags, field
):
    make_budget(org, "100")

    assert_error(reserve(api, key, "0.1", tags=tags), 422, "invalid_field", field)
    assert not Reservation.objects.exists()
    assert not BudgetWindow.objects.exists()


def test_event_tag_names_follow_the_same_rule(api, org, key):
    response = post(api, key, today_event("bad-1", cost_usd="0.1", tags={"a=b": "c"}))

    assert_error(response, 422, "invalid_field", "tags.a=b")


def test_the_budget_lookup_reads_only_the_requests_tag_budgets(org, make_budget):
    """With 5,000 tag budgets in one org (one per customer), the generic plan
    of the lookup reads the request's tag budgets through budget_org_tag."""
    make_budget(org, "100")
    Budget.objects.bulk_create(
        Budget(org=org, scope="tag", tag=f"customer=c{i}", period="day", limit_usd=10)
        for i in range(5000)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE budgets_budget")
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.execute(
            "PREPARE lookup(bigint, text[], text) AS SELECT * FROM tollgate_applicable("
            "$1, NULL, NULL, now(), NULL, $2, $3)"
        )
        try:
            cursor.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE lookup(%s, %s, 'gpt-4o')",
                [org.id, ["customer=c17", "feature=x"]],
            )
            plan = cursor.fetchone()[0][0]["Plan"]
            cursor.execute(
                "EXECUTE lookup(%s, %s, 'gpt-4o')", [org.id, ["customer=c17", "feature=x"]]
            )
            rows = cursor.fetchall()
        finally:
            cursor.execute("DEALLOCATE lookup")
            cursor.execute("RESET plan_cache_mode")

    assert [(r[1], r[2]) for r in rows] == [("org", org.slug), ("tag", "customer=c17")]
    assert "budget_org_tag" in str(plan)
    # A few index pages, not the 5,000 budgets' (~100 pages).
    assert plan["Shared Hit Blocks"] + plan.get("Shared Read Blocks", 0) < 40


def test_an_alert_of_a_model_filtered_budget_names_its_filter(api, org, key, admin_key):
    assert put(api, admin_key, "team/search/day", "1", model="claude-opus-*").status_code == 200

    only_result(
        post(
            api,
            key,
            today_event("a-1", team="search", cost_usd="0.9", model="claude-opus-4"),
        )
    )

    alert = Alert.objects.get(kind="soft")
    payload = alert_payload(alert)
    assert payload["alert"]["model"] == "claude-opus-*"
    assert "team budget 'search' for models claude-opus-* (day)" in payload["text"]
