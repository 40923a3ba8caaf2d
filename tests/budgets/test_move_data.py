"""`manage.py move_data`: the suite's (embedded) test database -> a database on a
second, real PostgreSQL cluster.

Every model is populated first (the test fails when a new model has no rows
here, so that its table is moved in a test too). Row contents are compared
independently of the command's own digests: `SELECT *` in key order on both
sides.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from django.utils import timezone
from psycopg import sql

from budgets.models import Alert, ApiKey, Budget, Organization, Team
from budgets.services import forecasts_refresh
from config.move import SKIPPED, canonical_text, copy_order, describe_table, table_digest
from dashboard.models import LastViewedOrg, Membership, SignInAttempt
from tests.clusters import Cluster, cluster
from tests.conftest import auth, free_port, run_manage, start_server, stop_server
from tracking.models import ModelAlias

PASSWORD = "s3cret-never-printed"
_databases = itertools.count(1)


@pytest.fixture(scope="module")
def pg() -> Iterator[Cluster]:
    with cluster("move") as pg:
        yield pg


@pytest.fixture
def target(pg) -> str:
    """A new, empty database on the second cluster, owned by a role that is not
    a superuser (as on a managed server); its URL carries a password (the
    cluster trusts local connections and ignores it) to check it never shows."""
    name = f"move_{next(_databases)}"
    pg.create_database(name, owner="tollgate")
    return pg.url(name, user="tollgate", password=PASSWORD)


@pytest.fixture
def populated(test_database_url, server, transactional_db) -> dict[str, str]:
    """Rows in every model's table, made the way the product makes them."""
    for command in (("load_prices",), ("seed_demo", "--events", "2000", "--days", "3")):
        done = run_manage(test_database_url, *command)
        assert done.returncode == 0, done.stdout + done.stderr
    org = Organization.objects.get(slug="demo")
    ModelAlias.objects.create(org=org, name="my-gpt4o-prod", model="gpt-4o")
    key = ApiKey.generate(org=org, is_admin=True, name="move test")
    key[0].save()
    secret = key[1]
    with httpx.Client(base_url=server.url, timeout=10) as api:
        # Holds, one released, on the monitor-only team: seed_demo's traffic
        # takes search past its day budget late in the (UTC) day, and a hold
        # there would then be refused.
        for amount in ("0.002", "0.001"):
            held = api.post(
                "/v1/budget/reservations",
                headers=auth(secret),
                json={"team": "research", "user": "mover", "estimated_cost_usd": amount},
            )
            assert held.status_code == 201, held.text
        released = api.post(
            f"/v1/budget/reservations/{held.json()['reservation_id']}/release",
            headers=auth(secret),
        )
        assert released.status_code == 200, released.text
        # Spend past alice's and her team's day budgets: alerts, whatever the
        # hour (seed_demo's own traffic crosses a soft limit at some hours only).
        over = api.post(
            "/v1/events",
            headers=auth(secret),
            json={
                "id": "move-over-budget",
                "team": "search",
                "user": "alice",
                "model": "gpt-4o",
                "cost_usd": "5",
            },
        )
        assert over.status_code == 201, over.text
    # A reported tag: the pass builds its tag rollups.
    Organization.objects.filter(pk=org.pk).update(report_tags=["feature"])
    # A pass takes events received more than the lag ago: a lag of 1 s (it
    # must exceed the request timeout) and a pause, instead of two minutes.
    time.sleep(1.1)
    done = run_manage(
        test_database_url,
        "aggregate_usage",
        AGGREGATION_LAG_SECONDS="1",
        BUDGET_DB_TIMEOUT_MS="500",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The budgets' forecast profiles, as the worker computes them.
    assert forecasts_refresh() > 0

    # An alert delivery that failed (nothing listens there).
    org.webhook_url = "http://127.0.0.1:1/nothing-listens"
    org.save()
    alert = Alert.objects.filter(org=org).first()
    assert alert is not None
    Alert.objects.filter(pk=alert.pk).update(
        delivery_status="pending", next_attempt_at=timezone.now()
    )
    call_command("deliver_alerts", stdout=io.StringIO())

    admin = User.objects.create_superuser("admin", "admin@example.com", "admin-pass-123")
    viewer = User.objects.create_user("viewer", "viewer@example.com", "viewer-pass-123")
    group = Group.objects.create(name="budget editors")
    group.permissions.add(*Permission.objects.filter(content_type__app_label="budgets")[:3])
    viewer.groups.add(group)
    viewer.user_permissions.add(Permission.objects.get(codename="view_budget"))
    lead = Membership.objects.create(user=viewer, org=org, role=Membership.Role.TEAM_LEAD)
    lead.teams.add(*Team.objects.filter(org=org, slug="search"))
    LastViewedOrg.objects.create(user=admin, org=org)  # where staff land
    # A sign-in being throttled: copied like any row (it expires in 15 minutes).
    SignInAttempt.objects.create(key="198.51.100.7|viewer")
    budget = Budget.objects.filter(org=org).first()
    LogEntry.objects.create(
        user=admin,
        content_type=ContentType.objects.get_for_model(Budget),
        object_id=str(budget.pk),
        object_repr=str(budget),
        action_flag=CHANGE,
        change_message="[]",
    )
    SessionStore().create()  # a sign-in token: must not be copied
    return {"key": secret}


def _tables() -> list[str]:
    return [t for t in copy_order() if t not in SKIPPED]


def _rows(url: str, table: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        key = describe_table(conn, table).key
        query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, key))
        )
        return conn.execute(query).fetchall()


def _digests(url: str) -> dict[str, tuple[int, str]]:
    with psycopg.connect(url) as conn:
        canonical_text(conn)
        return {t: table_digest(conn, describe_table(conn, t)) for t in _tables()}


def _target_tables(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()[0]


def _move(source: str, target: str, *args: str):
    done = run_manage(source, "move_data", "--to", target, *args)
    assert PASSWORD not in done.stdout + done.stderr
    return done


def test_copy_order_puts_every_table_after_the_tables_it_references():
    from django.apps import apps

    order = copy_order()
    assert "auth_user_groups" in order  # auto-created many-to-many tables are included
    for model in apps.get_models(include_auto_created=True):
        own = order.index(model._meta.db_table)
        for f in model._meta.concrete_fields:
            if f.is_relation and f.related_model is not model:
                assert order.index(f.related_model._meta.db_table) < own, (model, f)


def test_move_copies_every_table_and_a_rerun_copies_nothing(
    test_database_url, populated, target, tmp_path
):
    empty = [t for t in _tables() if not _rows(test_database_url, t)]
    assert not empty, f"populate these tables in the fixture: {empty}"
    before = _digests(test_database_url)

    done = _move(test_database_url, target, "--batch-size", "500")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "every row count and digest matches" in done.stdout
    assert "tracking_requestevent" in done.stdout and "rows/s" in done.stdout  # progress
    assert "postgresql://tollgate:***@" in done.stdout
    for table in _tables():
        assert _rows(target, table) == _rows(test_database_url, table), table
    assert _rows(target, "django_session") == []
    assert _digests(test_database_url) == before  # the source is unchanged
    assert _digests(target) == before

    again = _move(test_database_url, target)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(0 new)" in again.stdout
    assert _digests(test_database_url) == before

    # Rows missing on the target (say, a table emptied by hand) are filled in.
    with psycopg.connect(target) as conn:
        conn.execute(
            "DELETE FROM tracking_requestevent WHERE id IN"
            " (SELECT id FROM tracking_requestevent ORDER BY id DESC LIMIT 7)"
        )
    resumed = _move(test_database_url, target)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "(7 new)" in resumed.stdout
    assert _digests(target) == before

    # The moved data works: a server on the target takes the copied key, holds
    # and records spend (new ids come after the copied ones: sequences were reset).
    live = start_server(target, tmp_path)
    try:
        with httpx.Client(base_url=live.url, timeout=10) as api:
            key = auth(populated["key"])
            budgets = api.get("/v1/budgets", headers=key)
            assert budgets.status_code == 200, budgets.text
            assert len(budgets.json()["budgets"]) == Budget.objects.count()
            held = api.post(
                "/v1/budget/reservations",
                headers=key,
                json={"team": "research", "user": "mover-2", "estimated_cost_usd": "0.001"},
            )
            assert held.status_code == 201, held.text
            event = api.post(
                "/v1/events",
                headers=key,
                json={"id": "after-move-1", "model": "gpt-4o", "cost_usd": "0.01"},
            )
            assert event.status_code in (200, 201), event.text
    finally:
        stop_server(live)
    with psycopg.connect(target) as conn:
        newest = conn.execute(
            "SELECT event_id FROM tracking_requestevent ORDER BY id DESC LIMIT 1"
        ).fetchone()[0]
    assert newest == "after-move-1"


def test_tampered_target_row_fails_naming_the_table(test_database_url, populated, target):
    assert _move(test_database_url, target).returncode == 0
    with psycopg.connect(target) as conn:
        conn.execute("UPDATE budgets_apikey SET name = 'changed on the target'")

    done = _move(test_database_url, target)

    assert done.returncode != 0
    assert "budgets_apikey" in done.stderr
    assert "DIFFERS" in done.stdout
    with psycopg.connect(target) as conn:  # never overwritten
        names = {r[0] for r in conn.execute("SELECT name FROM budgets_apikey")}
    assert names == {"changed on the target"}


def test_dry_run_writes_nothing(test_database_url, populated, target):
    before = _digests(test_database_url)

    done = _move(test_database_url, target, "--dry-run")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Nothing was written" in done.stdout
    events = _rows(test_database_url, "tracking_requestevent")
    assert events and f"{len(events):,}" in done.stdout
    assert "to apply on the target" in done.stdout
    assert _target_tables(target) == 0
    assert _digests(test_database_url) == before

    assert _move(test_database_url, target).returncode == 0
    verify = _move(test_database_url, target, "--dry-run")
    assert verify.returncode == 0
    assert f"{len(_tables())} tables already identical" in verify.stdout


def test_unreachable_target_fails_clearly(test_database_url, transactional_db):
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/tollgate"

    done = _move(test_database_url, url)

    assert done.returncode != 0
    assert "Cannot connect to the target postgresql://postgres:***@127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr


def test_target_that_is_the_source_is_refused(test_database_url, transactional_db):
    done = _move(test_database_url, test_database_url)

    assert done.returncode != 0
    assert "is the source database itself" in done.stderr


def test_a_table_without_a_model_stops_the_move(test_database_url, transactional_db, target):
    with psycopg.connect(test_database_url) as conn:
        conn.execute("CREATE TABLE stray_table (id int PRIMARY KEY)")
    try:
        done = _move(test_database_url, target)
    finally:
        with psycopg.connect(test_database_url) as conn:
            conn.execute("DROP TABLE stray_table")

    assert done.returncode != 0
    assert "stray_table" in done.stderr
    assert _target_tables(target) == 0  # refused before touching the target


def test_content_types_that_migrate_numbered_otherwise_are_replaced(
    test_database_url, populated, target
):
    """An operator may have run `migrate` on the target first; a database
    migrated release by release numbers its content types otherwise. Admin log
    entries and granted permissions point at the source's ids, so those win."""
    assert run_manage(target, "migrate", "--verbosity", "0").returncode == 0
    with psycopg.connect(target) as conn:  # foreign keys are deferred to the commit
        conn.execute("UPDATE django_content_type SET id = id + 1000")
        conn.execute("UPDATE auth_permission SET content_type_id = content_type_id + 1000")

    done = _move(test_database_url, target)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Replacing what migrate created on the target" in done.stdout
    for table in ("django_content_type", "auth_permission", "django_admin_log"):
        assert _rows(target, table) == _rows(test_database_url, table), table


def test_a_source_from_another_version_is_refused(test_database_url, transactional_db, target):
    with psycopg.connect(test_database_url) as conn:
        conn.execute(
            "INSERT INTO django_migrations (app, name, applied)"
            " VALUES ('budgets', '9999_from_the_future', now())"
        )
    try:
        done = _move(test_database_url, target)
    finally:
        with psycopg.connect(test_database_url) as conn:
            conn.execute("DELETE FROM django_migrations WHERE name = '9999_from_the_future'")

    assert done.returncode != 0
    assert "only on the source: budgets.9999_from_the_future" in done.stderr
    with psycopg.connect(target) as conn:  # migrated, but not one row copied
        assert conn.execute("SELECT count(*) FROM budgets_organization").fetchone()[0] == 0
