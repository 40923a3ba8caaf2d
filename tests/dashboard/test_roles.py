"""Roles on the dashboard (viewer, team lead, org admin; staff act as org
admins): who sees edit controls, who may change which budget, the form's
validation and confirmation, and the audit record naming the login."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode

import pytest

from budgets.models import AuditEntry, Budget, Team
from dashboard.admin import MembershipForm
from dashboard.models import Membership

VIEWER, LEAD, ADMIN = (Membership.Role.VIEWER, Membership.Role.TEAM_LEAD, Membership.Role.ORG_ADMIN)


def edit_url(action: str, scope: str, subject: str, period: str, org: str = "acme") -> str:
    query = urlencode({"org": org, "scope": scope, "subject": subject, "period": period})
    return f"/dashboard/budgets/{action}?{query}"


NEW = "/dashboard/budgets/new?org=acme"


@pytest.fixture
def budgets(org, make_budget) -> dict[str, Budget]:
    return {
        "org": make_budget(org, "500", period="month"),
        "search": make_budget(org, "100", scope="team", team="search", period="month"),
        "research": make_budget(org, "40", scope="team", team="research", period="month"),
        "alice": make_budget(org, "5", scope="user", user="alice", period="day"),
    }


def test_a_viewer_sees_no_edit_controls_and_every_edit_endpoint_refuses(
    client, org, budgets, make_user
):
    client.force_login(make_user("vera", org=org, role=VIEWER))

    page = client.get("/").content.decode()
    refusals = [
        client.get(NEW).status_code,
        client.post(NEW, {"scope": "org", "period": "day", "limit_usd": "1", "confirmed": "1"}),
        client.get(edit_url("edit", "team", "search", "month")).status_code,
        client.post(
            edit_url("edit", "team", "search", "month"),
            {"limit_usd": "1", "soft_limit_pct": "80", "confirmed": "1"},
        ),
        client.post(edit_url("delete", "org", "acme", "month"), {"confirmed": "1"}),
    ]

    assert 'id="dashboard-powers"' not in page and "New budget" not in page
    assert [r if isinstance(r, int) else r.status_code for r in refusals] == [403] * 5
    assert b"may only read" in refusals[1].content and b"error-page" in refusals[1].content
    assert Budget.objects.count() == 4
    assert Budget.objects.get(pk=budgets["search"].pk).limit_usd == Decimal("100")
    assert not AuditEntry.objects.filter(object_type="budget").exists()


def test_an_org_admin_creates_a_budget_only_after_confirming(client, org, make_user):
    Team.objects.create(org=org, slug="search")
    ann = make_user("ann", org=org, role=ADMIN)
    client.force_login(ann)
    form = {"scope": "team", "team": Team.objects.get().pk, "period": "week",
            "limit_usd": "250.50", "soft_limit_pct": "75", "enforce": "on"}  # fmt: skip

    review = client.post(NEW, form)
    assert review.status_code == 200
    assert b"Create this budget?" in review.content and b"$250.50" in review.content
    assert not Budget.objects.exists()

    saved = client.post(NEW, {**form, "enforce": "True", "confirmed": "1"})

    budget = Budget.objects.get()
    assert (budget.scope, budget.team.slug, budget.period) == ("team", "search", "week")
    assert (budget.limit_usd, budget.soft_limit_pct, budget.enforce) == (Decimal("250.5"), 75, True)
    assert saved.status_code == 302
    assert saved["Location"] == edit_url("edit", "team", "search", "week")
    entry = AuditEntry.objects.get(object_type="budget")
    assert (entry.actor_kind, entry.actor_user_id, entry.actor_label) == ("user", ann.pk, "ann")
    assert (entry.action, entry.object_id) == ("create", "team/search/week")
    assert entry.new["limit_usd"] == "250.5"
    # The budget's page shows the record.
    history = client.get(saved["Location"]).content.decode()
    assert "ann" in history[history.index('id="history"') :]


def test_the_form_says_what_is_wrong_next_to_the_field(client, org, budgets, make_user):
    client.force_login(make_user("ann", org=org, role=ADMIN))

    bad = client.post(
        NEW, {"scope": "team", "period": "day", "limit_usd": "-5", "soft_limit_pct": "120"}
    )
    html = bad.content.decode()
    duplicate = client.post(
        NEW, {"scope": "org", "period": "month", "limit_usd": "9", "soft_limit_pct": "80"}
    )
    unknown_user = client.post(
        NEW,
        {
            "scope": "user",
            "user": "nobody",
            "period": "day",
            "limit_usd": "1",
            "soft_limit_pct": "80",
        },
    )

    assert bad.status_code == 422
    assert 'id="id_limit_usd-error">The limit must be zero or more.' in html
    assert 'id="id_soft_limit_pct-error">The soft limit is a percentage from 0 to 100.' in html
    assert 'id="id_team-error">Pick the team this budget is for.' in html
    assert duplicate.status_code == 422
    assert b"This subject already has a budget for this period." in duplicate.content
    assert unknown_user.status_code == 422
    assert b"No user &#x27;nobody&#x27; in this organization yet" in unknown_user.content
    assert Budget.objects.count() == 4


def test_an_org_admin_changes_and_deletes_any_budget_of_the_org(client, org, budgets, make_user):
    client.force_login(make_user("ann", org=org, role=ADMIN))
    url = edit_url("edit", "user", "alice", "day")
    form = {"limit_usd": "7.25", "soft_limit_pct": "50"}  # enforce unticked: monitor only

    review = client.post(url, form)
    saved = client.post(url, {**form, "enforce": "False", "confirmed": "1"})
    deleted = client.post(edit_url("delete", "org", "acme", "month"), {"confirmed": "1"})

    assert b"Save this budget?" in review.content
    assert saved.status_code == 302 and deleted.status_code == 302
    alice = Budget.objects.get(pk=budgets["alice"].pk)
    assert (alice.limit_usd, alice.soft_limit_pct, alice.enforce) == (Decimal("7.25"), 50, False)
    assert not Budget.objects.filter(pk=budgets["org"].pk).exists()
    update, delete = AuditEntry.objects.filter(object_type="budget").order_by("id")
    assert (update.action, update.actor_label) == ("update", "ann")
    assert update.old["limit_usd"] == "5" and update.new["limit_usd"] == "7.25"
    assert update.new["enforce"] is False
    assert (delete.action, delete.object_id, delete.actor_label) == (
        "delete",
        "org/acme/month",
        "ann",
    )


def test_a_team_lead_edits_their_teams_budgets_and_nothing_else(client, org, budgets, make_user):
    lead = make_user("leo", org=org, role=LEAD, teams=("search",))
    client.force_login(lead)
    form = {"limit_usd": "120", "soft_limit_pct": "80", "enforce": "True", "confirmed": "1"}

    page = client.get("/")
    own = client.post(edit_url("edit", "team", "search", "month"), form)
    other_team = client.post(edit_url("edit", "team", "research", "month"), form)
    other_delete = client.post(edit_url("delete", "team", "research", "month"), {"confirmed": "1"})
    org_budget = client.get(edit_url("edit", "org", "acme", "month"))
    user_budget = client.get(edit_url("edit", "user", "alice", "day"))
    new_for_other = client.post(
        NEW,
        {
            "scope": "team",
            "team": budgets["research"].team_id,
            "period": "day",
            "limit_usd": "1",
            "soft_limit_pct": "80",
            "confirmed": "1",
        },
    )
    new_org = client.post(
        NEW,
        {
            "scope": "org",
            "period": "day",
            "limit_usd": "1",
            "soft_limit_pct": "80",
            "confirmed": "1",
        },
    )

    assert page.context["powers"] == {"org": "acme", "editAll": False, "teams": ["search"]}
    assert own.status_code == 302
    assert Budget.objects.get(pk=budgets["search"].pk).limit_usd == Decimal("120")
    assert [r.status_code for r in (other_team, other_delete, org_budget, user_budget)] == [403] * 4
    assert b"teams they lead" in other_team.content
    assert new_for_other.status_code == 422 and new_org.status_code == 422
    assert Budget.objects.get(pk=budgets["research"].pk).limit_usd == Decimal("40")
    assert Budget.objects.count() == 4
    (entry,) = AuditEntry.objects.filter(object_type="budget")
    assert (entry.actor_user_id, entry.object_id) == (lead.pk, "team/search/month")
    # A new budget of their own team is theirs to make.
    own_new = client.post(
        NEW,
        {
            "scope": "team",
            "team": budgets["search"].team_id,
            "period": "day",
            "limit_usd": "3",
            "soft_limit_pct": "80",
            "confirmed": "1",
        },
    )
    assert own_new.status_code == 302
    assert Budget.objects.filter(scope="team", team__slug="search", period="day").exists()


def test_a_team_lead_of_no_team_only_reads(client, org, budgets, make_user):
    client.force_login(make_user("leo", org=org, role=LEAD))

    assert client.get("/").context["powers"] is None
    assert client.get(NEW).status_code == 403


def test_staff_act_as_org_admins_of_any_org(client, org, budgets, make_org, make_user):
    make_org("globex")
    client.force_login(make_user("root", staff=True))

    page = client.get("/?org=acme")
    edit = client.get(edit_url("edit", "team", "research", "month"))
    elsewhere = client.get(edit_url("edit", "team", "research", "month", org="globex"))

    assert page.context["powers"] == {"org": "acme", "editAll": True, "teams": []}
    assert edit.status_code == 200 and elsewhere.status_code == 404


def test_a_member_cannot_edit_another_orgs_budgets(client, org, budgets, make_org, make_user):
    make_org("globex")
    client.force_login(make_user("ann", org=org, role=ADMIN))

    response = client.get(edit_url("edit", "org", "globex", "month", org="globex"))

    assert response.status_code == 403


def test_membership_admin_keeps_teams_to_team_leads_of_the_org(org, make_org, make_user):
    globex = make_org("globex")
    ours, theirs = Team.objects.create(org=org, slug="a"), Team.objects.create(org=globex, slug="b")
    user = make_user("ann")

    def errors(role: str, teams: list[Team]) -> dict:
        form = MembershipForm(
            {
                "user": user.pk,
                "org": org.pk,
                "role": role,
                "teams": [t.pk for t in teams],
                "created_at_0": "2026-12-05",
                "created_at_1": "10:00",
            },
        )
        form.is_valid()
        return form.errors.get("teams", [])

    assert errors(LEAD, [ours]) == []
    assert errors(LEAD, [theirs]) == ["Not teams of acme: globex/b."]
    assert "Only a team lead leads teams" in errors(VIEWER, [ours])[0]


def test_an_org_admin_creates_a_tag_budget_and_edits_a_model_filtered_one_alone(
    client, org, budgets, make_user
):
    client.force_login(make_user("ann", org=org, role=ADMIN))
    form = {"scope": "tag", "tag": "customer=acme", "model_filter": "Claude-Opus-*",
            "period": "month", "limit_usd": "30", "soft_limit_pct": "80", "enforce": "True"}  # fmt: skip

    missing = client.post(NEW, {**form, "tag": ""})
    saved = client.post(NEW, {**form, "confirmed": "1"})

    assert missing.status_code == 422 and b"name=value" in missing.content
    tag_budget = Budget.objects.get(scope="tag")
    assert (tag_budget.tag, tag_budget.model_filter) == ("customer=acme", "claude-opus-*")
    assert saved.status_code == 302
    assert "scope=tag" in saved["Location"] and "model=claude-opus-" in saved["Location"]
    # A model-filtered budget of the search team beside its unfiltered one:
    # its own address reaches it, and the other is left as it was.
    filtered = Budget.objects.create(
        org=org, scope="team", team=budgets["search"].team, period="month",
        model_filter="gpt-4o", limit_usd=Decimal("10"),
    )  # fmt: skip
    url = edit_url("edit", "team", "search", "month") + "&model=gpt-4o"
    changed = client.post(url, {"limit_usd": "12", "soft_limit_pct": "80", "confirmed": "1"})

    assert changed.status_code == 302
    assert Budget.objects.get(pk=filtered.pk).limit_usd == Decimal("12")
    assert Budget.objects.get(pk=budgets["search"].pk).limit_usd == Decimal("100")
