from __future__ import annotations

import io
from decimal import Decimal

from django.core.management import call_command
from django.db.models import Sum

from budgets.models import AuditEntry, Budget, BudgetWindow
from tracking.models import RequestEvent


def test_seed_demo_records_realistic_traffic_through_ingest(db):
    call_command("load_prices", stdout=io.StringIO())
    out = io.StringIO()

    call_command("seed_demo", org="demoseed", days=3, events=2000, stdout=out)

    events = RequestEvent.objects.filter(org__slug="demoseed")
    assert events.count() == 2000
    assert "Recorded 2,000 new events" in out.getvalue()
    assert events.values("model").distinct().count() >= 6
    assert events.filter(cache_read_tokens__gt=0).exists()
    assert events.filter(reasoning_tokens__gt=0).exists()
    assert events.filter(status="error").exists()
    assert not events.filter(priced=False).exists()
    # Spend went through the ingest function: the org's month windows hold it.
    org_budget = Budget.objects.get(org__slug="demoseed", scope="org")
    window_spent = BudgetWindow.objects.filter(budget=org_budget).aggregate(s=Sum("spent"))["s"]
    assert window_spent == events.aggregate(s=Sum("cost_usd"))["s"] > Decimal(0)


def test_seed_demo_records_the_org_and_budgets_it_creates_in_the_audit_log(db):
    call_command("seed_demo", org="demoaudit", days=1, events=10, stdout=io.StringIO())

    entries = AuditEntry.objects.filter(org__slug="demoaudit", action="create")
    budgets = {e.object_id for e in entries.filter(object_type="budget")}
    assert budgets == {
        "org/demoaudit/month",
        "team/search/day",
        "team/support/day",
        "team/research/week",
        "team/growth/month",
        "user/alice/day",
        "tag/feature=agent/month",
        "team/research/week?model=claude-sonnet-*",
    }
    assert entries.filter(object_type="organization").count() == 1
    assert {e.actor_kind for e in entries} == {"command"}
    assert all(e.actor_label.startswith("seed_demo (by ") for e in entries)
