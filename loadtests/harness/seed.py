"""The bench org every HTTP benchmark measures: Django set up on the embedded
PostgreSQL (migrated, so the SQL functions are this checkout's), the org with
its teams, users and its budgets, and its windows reset between runs.

Two budget scenarios (BENCH_BUDGETS in the environment of the load
generators, `--budgets` of loadtests.compare):
- `org` (the default): one org day budget; a request names its team and user.
- `six`: a realistic request meets six budgets: the org's, its team's
  (model-filtered: `claude-opus-*`), its user's, its API key's, and two tag
  budgets (`feature=f-N`, `customer=c-TT`); the request also sends the model
  `claude-opus-4` and those two tags (request_body).
Every limit is far above what a run can hold, so no request is denied and
every one takes the full hold path."""

from __future__ import annotations

import os
from decimal import Decimal

ORG_SLUG = "bench"
TEAMS = 20
USERS_PER_TEAM = 10
# Far above what a run can reserve ($0.001 x a few hundred thousand requests),
# so no request is denied and every one takes the full hold path.
ORG_DAY_LIMIT = Decimal("1000000")
HOLD_USD = "0.001"
BUDGETS = ("org", "six")
FEATURES = 4
SIX_MODEL = "claude-opus-4"
SIX_MODEL_FILTER = "claude-opus-*"


def scenario() -> str:
    """The budget scenario the generators build bodies for (BENCH_BUDGETS)."""
    return os.environ.get("BENCH_BUDGETS") or "org"


def request_body(team: int, user: int, budgets: str) -> str:
    """One reservation body of team `team`'s user `user` (reservations.lua
    builds the same)."""
    extra = ""
    if budgets == "six":
        extra = (
            f',"model":"{SIX_MODEL}","tags":{{"feature":"f-{team % FEATURES + 1}",'
            f'"customer":"c-{team:02d}"}}'
        )
    return (
        f'{{"team":"team-{team:02d}","user":"user-{team:02d}-{user:02d}",'
        f'"estimated_cost_usd":"{HOLD_USD}"{extra}}}'
    )


def django_setup() -> None:
    """Load settings first: that starts (or joins) the embedded PostgreSQL and
    puts its DATABASE_URL into os.environ, which every server started here
    inherits, so all designs use the same database. Then migrate it."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.core.management import call_command

    django.setup()
    # The hot path's SQL functions live in migrations: a database left behind
    # by an older checkout would measure the old functions under the new code
    # (it happened: a whole comparison ran on the previous decide_many).
    call_command("migrate", verbosity=0)


def seed(key_name: str = "loadtests.compare", budgets: str = "org") -> str:
    """Create (once) the bench org and its subjects, give it the budgets of
    the scenario `budgets` (and no others), and return the secret of a fresh
    API key named `key_name`."""
    from budgets.models import Budget, EndUser, Organization, Team
    from budgets.services import api_key_create, organization_create

    org = Organization.objects.filter(slug=ORG_SLUG).first() or organization_create(slug=ORG_SLUG)
    # Registered up front so that every design finds them instead of creating them.
    teams, users = {}, {}
    for t in range(1, TEAMS + 1):
        teams[t] = Team.objects.get_or_create(org=org, slug=f"team-{t:02d}")[0]
        for u in range(1, USERS_PER_TEAM + 1):
            users[t, u] = EndUser.objects.get_or_create(
                org=org, external_id=f"user-{t:02d}-{u:02d}"
            )[0]
    org_budget, _ = Budget.objects.update_or_create(
        org=org,
        scope=Budget.Scope.ORG,
        model_filter="",
        period=Budget.Period.DAY,
        defaults={"limit_usd": ORG_DAY_LIMIT, "enforce": True},
    )
    # Another scenario's budgets would apply to this one's requests too.
    Budget.objects.filter(org=org).exclude(pk=org_budget.pk).delete()
    key, secret = api_key_create(org=org, is_admin=True, name=key_name)
    if budgets == "six":
        day = {"org": org, "period": Budget.Period.DAY, "limit_usd": ORG_DAY_LIMIT}
        Budget.objects.bulk_create(
            [
                *(
                    Budget(scope="team", team=team, model_filter=SIX_MODEL_FILTER, **day)
                    for team in teams.values()
                ),
                *(Budget(scope="user", user=user, **day) for user in users.values()),
                *(Budget(scope="tag", tag=f"feature=f-{f}", **day) for f in range(1, FEATURES + 1)),
                *(Budget(scope="tag", tag=f"customer=c-{t:02d}", **day) for t in teams),
                Budget(scope="key", key=key, **day),
            ]
        )
    return secret


def delete_keys() -> None:
    """Keys of earlier runs are useless (their secrets were never stored)."""
    from budgets.models import ApiKey

    ApiKey.objects.filter(org__slug=ORG_SLUG, name="loadtests.compare").delete()


def reset_windows() -> None:
    """Give each design the same start: no reservations, and a fresh (zero)
    window for the current period of every budget of the bench org.

    A running deployment has its current windows and statistics of them and
    of its subjects (autovacuum keeps them; the embedded server here may not
    have run long enough to). A
    windows table left empty would be planned as empty: the hot path's plans
    are cached per connection at first use and kept until the next ANALYZE,
    and a plan made for an empty table reads windows by scanning them (for a
    six-budget batch, that doubled the time of finding each item's budgets:
    docs/benchmarks/six-budgets.md). VACUUM also clears the dead row
    versions that thousands of updates of the one org window left behind,
    which the next design would otherwise wade through.
    """
    from django.db import connection, transaction

    from budgets.models import BudgetWindow, Reservation

    with transaction.atomic():
        Reservation.objects.filter(org__slug=ORG_SLUG).delete()
        BudgetWindow.objects.filter(budget__org__slug=ORG_SLUG).delete()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tollgate_create_windows(array_agg(b.id), array_agg(pb.period_start),"
                " array_agg(pb.period_end))"
                " FROM budgets_budget b JOIN budgets_organization o ON o.id = b.org_id"
                " CROSS JOIN LATERAL tollgate_period_bounds(b.period, o.time_zone, now()) pb"
                " WHERE o.slug = %s",
                [ORG_SLUG],
            )
    with connection.cursor() as cursor:
        for table in (
            "budgets_reservation",
            "budgets_budgetwindow",
            "budgets_budget",
            "budgets_team",
            "budgets_enduser",
            "budgets_apikey",
            "budgets_organization",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")


def holds_in_database() -> tuple[int, int]:
    """(reservation rows, holds added up in the org window) of the bench org,
    to cross-check that every 2xx of a design really held its amount."""
    from django.db.models import Sum

    from budgets.models import BudgetWindow, Reservation

    rows = Reservation.objects.filter(org__slug=ORG_SLUG).count()
    total = BudgetWindow.objects.filter(
        budget__org__slug=ORG_SLUG, budget__scope="org", budget__model_filter=""
    ).aggregate(s=Sum("reserved"))
    return rows, int((total["s"] or Decimal(0)) / Decimal(HOLD_USD))
