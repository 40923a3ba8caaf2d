"""Django admin as a FinOps lead uses it: money as money, the utilization
column sortable, a team only from the budget's (or key's) org, and a
constraint the database enforces said in words, never a server error."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models.signals import pre_save
from django.urls import reverse

from budgets.models import ApiKey, Budget, BudgetWindow, Reservation, Team

# An amount at the columns' ten decimal places, as Django shows numeric by default.
RAW_AMOUNT = re.compile(r"\d\.\d{10}\b")


@pytest.fixture
def staff_client(client, db):
    user = get_user_model().objects.create_superuser("boss", "", "pw-for-tests-only")
    client.force_login(user)
    return client


def url(model, page: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{page}", args=args)


def hold(org, amount: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tollgate_decide(%s, false, NULL, NULL, %s, NULL, NULL, NULL, true, 300, NULL)",
            [org.id, Decimal(amount)],
        )


def budget_form(org, **fields) -> dict:
    return {
        "org": org.pk,
        "scope": "org",
        "team": "",
        "user": "",
        "period": "day",
        "limit_usd": "10",
        "soft_limit_pct": "80",
        "enforce": "on",
        "created_at_0": "2026-12-01",
        "created_at_1": "10:00:00",
        "windows-TOTAL_FORMS": "0",
        "windows-INITIAL_FORMS": "0",
        "windows-MIN_NUM_FORMS": "0",
        "windows-MAX_NUM_FORMS": "0",
        **fields,
    }


def test_money_reads_as_money_in_lists_and_change_views(staff_client, make_org, make_budget):
    org = make_org("acme")
    budget = make_budget(org, "122.45")
    hold(org, "1.5")
    BudgetWindow.objects.update(spent=Decimal("3.1"))
    key = ApiKey.generate(org=org, name="gw", max_request_usd=Decimal("0.5"))[0]
    key.save()
    reservation = Reservation.objects.get()

    pages = {
        "budgets": staff_client.get(url(Budget, "changelist")),
        "budget": staff_client.get(url(Budget, "change", budget.pk)),
        "holds": staff_client.get(url(Reservation, "changelist")),
        "hold": staff_client.get(url(Reservation, "change", reservation.pk)),
        "keys": staff_client.get(url(ApiKey, "changelist")),
        "key": staff_client.get(url(ApiKey, "change", key.pk)),
    }

    text = {name: page.content.decode() for name, page in pages.items()}
    assert {name: page.status_code for name, page in pages.items()} == dict.fromkeys(pages, 200)
    raw = {name: RAW_AMOUNT.findall(page) for name, page in text.items()}
    assert raw == {name: [] for name in pages}
    assert '<td class="field-limit_usd">$122.45</td>' in text["budgets"]
    assert '<td class="field-spent">$3.10</td>' in text["budgets"]
    assert "acme org:acme day $122.45" in text["budgets"]
    assert 'name="limit_usd" value="122.45"' in text["budget"]
    assert re.search(r"field-spent\">\s*<p>\$3.10</p>", text["budget"])  # the windows inline
    assert '<td class="field-amount">$1.50</td>' in text["holds"]
    assert '<div class="readonly">$1.50</div>' in text["hold"]
    assert '<td class="field-max_request_usd">$0.50</td>' in text["keys"]
    assert 'name="max_request_usd" value="0.50"' in text["key"]


def test_utilization_sorts_the_budget_list(staff_client, make_org, make_budget):
    org = make_org("acme")
    for team, limit in [("low", "100"), ("high", "2"), ("mid", "10")]:
        make_budget(org, limit, scope="team", team=team)
    hold(org, "1")  # one hold on an org without an org budget: held by no budget
    for budget in Budget.objects.all():
        BudgetWindow.objects.create(
            budget=budget,
            period_start=budget.created_at.replace(hour=0, minute=0, second=0, microsecond=0),
            period_end=budget.created_at.replace(hour=23, minute=59, second=59),
            spent=Decimal("1"),
        )

    page = staff_client.get(url(Budget, "changelist")).content.decode()
    header = re.search(r'column-used_pct">.*?<a href="(\?o=[^"]+)"', page, re.S)
    ascending = staff_client.get(url(Budget, "changelist") + header.group(1)).content.decode()

    used = re.findall(r'<td class="field-used_pct">([^<]+)</td>', ascending)
    assert used == ["1.0%", "10.0%", "50.0%"]


def test_a_budget_team_must_be_of_the_budget_org(staff_client, make_org):
    acme, globex = make_org("acme"), make_org("globex")
    Team.objects.create(org=acme, slug="search")
    theirs = Team.objects.create(org=globex, slug="search")

    form = staff_client.get(url(Budget, "add")).content.decode()
    response = staff_client.post(
        url(Budget, "add"), budget_form(acme, scope="team", team=theirs.pk)
    )

    # Every team is named with its org, for the page's script to narrow them.
    assert re.findall(r'<option value="\d+">(\w+/search)</option>', form) == [
        "acme/search",
        "globex/search",
    ]
    assert "budgets/admin/org_teams.js" in form
    assert response.status_code == 200
    assert "Team globex/search is not one of acme&#x27;s teams." in response.content.decode()
    assert not Budget.objects.exists()


def test_a_key_team_must_be_of_the_key_org(staff_client, make_org):
    acme, globex = make_org("acme"), make_org("globex")
    theirs = Team.objects.create(org=globex, slug="search")

    response = staff_client.post(
        url(ApiKey, "add"), {"org": acme.pk, "team": theirs.pk, "name": "gw"}
    )

    assert response.status_code == 200
    assert "Team globex/search is not one of acme&#x27;s teams." in response.content.decode()
    assert not ApiKey.objects.exists()


def test_a_check_constraint_is_said_in_words(staff_client, make_org):
    org = make_org("acme")

    response = staff_client.post(url(Budget, "add"), budget_form(org, limit_usd="-1"))
    over = staff_client.post(url(Budget, "add"), budget_form(org, soft_limit_pct="101"))

    assert re.findall(r"errorlist[^>]*><li>(.*?)</li>", response.content.decode()) == [
        "The limit must be zero or more."
    ]
    assert "The soft limit is a percentage from 0 to 100." in over.content.decode()
    assert not Budget.objects.exists()


def test_a_save_the_database_refuses_is_said_in_words_not_a_500(staff_client, make_org):
    org = make_org("acme")

    # Another budget for the same subject and period arrives between the
    # form's checks and the admin's INSERT (as a second admin's would).
    def meanwhile(sender, instance, **kwargs):
        pre_save.disconnect(meanwhile, sender=Budget)
        Budget.objects.create(org=org, scope="org", period="day", limit_usd=Decimal(5))

    pre_save.connect(meanwhile, sender=Budget)
    try:
        response = staff_client.post(url(Budget, "add"), budget_form(org), follow=True)
    finally:
        pre_save.disconnect(meanwhile, sender=Budget)

    assert response.status_code == 200
    assert response.redirect_chain == [(url(Budget, "add"), 302)]
    assert "This subject already has a budget for this period." in response.content.decode()
    # The admin's transaction rolled back whole (here the other budget with
    # it, since the test made it on the same connection).
    assert not Budget.objects.exists()
