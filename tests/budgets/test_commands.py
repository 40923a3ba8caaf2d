"""The create_org and create_api_key management commands."""

from __future__ import annotations

import hashlib
import io
import re

import pytest
from django.core.management import CommandError, call_command

from budgets.models import ApiKey, Organization, Team
from tests.conftest import assert_error, auth

KEY_FORMAT = re.compile(r"^tg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def create_key(*args: str) -> str:
    """Runs create_api_key and returns the key, which is alone on the last line."""
    lines = run("create_api_key", *args).rstrip("\n").split("\n")
    assert len(lines) >= 2, "the key comes after a line saying what it is for"
    return lines[-1]


# --- create_org -------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_org_with_defaults():
    output = run("create_org", "acme")

    org = Organization.objects.get(slug="acme")
    assert (org.time_zone, org.strict, org.name) == ("UTC", False, "acme")
    assert "acme" in output


@pytest.mark.django_db
def test_create_org_with_time_zone_and_strict():
    output = run("create_org", "berlin", "--tz", "Europe/Berlin", "--strict", "--name", "Berlin")

    org = Organization.objects.get(slug="berlin")
    assert (org.time_zone, org.strict, org.name) == ("Europe/Berlin", True, "Berlin")
    assert "Europe/Berlin" in output and "strict" in output


@pytest.mark.django_db
def test_create_org_with_a_taken_slug_fails():
    run("create_org", "acme", "--tz", "Europe/Berlin")

    with pytest.raises(CommandError, match="already exists"):
        run("create_org", "acme")

    assert Organization.objects.get().time_zone == "Europe/Berlin"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "tz",
    [
        "Mars/Olympus_Mons",
        "",
        "../../etc/passwd",
        "europe/berlin",
        # Files in the system zoneinfo directory that Python loads but PostgreSQL,
        # which computes the periods, does not know: every request would fail.
        "localtime",
        "posixrules",
        "right/UTC",
    ],
)
def test_create_org_with_an_unknown_time_zone_fails(tz):
    with pytest.raises(CommandError, match=r"time zone|blank"):
        run("create_org", "acme", "--tz", tz)

    assert not Organization.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("slug", ["Not a slug", "a/b", "x" * 65])
def test_create_org_with_an_invalid_slug_fails(slug):
    with pytest.raises(CommandError):
        run("create_org", slug)

    assert not Organization.objects.exists()


def test_org_created_by_the_command_counts_days_in_its_time_zone(api, admin_key):
    # The org of the `admin_key` fixture is UTC; the command's Pacific org is
    # checked through the same server to show the time zone reaches the hot path.
    run("create_org", "pacific", "--tz", "Pacific/Kiritimati")
    key = create_key("--org", "pacific", "--admin")

    response = api.put("/v1/budgets/org/pacific/day", json={"limit_usd": "1"}, headers=auth(key))
    utc = api.put("/v1/budgets/org/acme/day", json={"limit_usd": "1"}, headers=auth(admin_key))

    assert response.status_code == 200, response.text
    # Kiritimati is UTC+14: its days end at 10:00 UTC, UTC's at midnight.
    assert response.json()["resets_at"].endswith("T10:00:00Z")
    assert utc.json()["resets_at"].endswith("T00:00:00Z")


# --- create_api_key ------------------------------------------------------------------------


def test_create_api_key_prints_a_working_key_on_the_last_line(api, org):
    key = create_key("--org", "acme")

    assert KEY_FORMAT.match(key), key
    response = api.post(
        "/v1/budget/check", json={"team": "search", "estimated_cost_usd": "1"}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    assert response.json()["allowed"] is True
    # Not an admin key unless asked for.
    assert_error(api.get("/v1/budgets", headers=auth(key)), 403, "forbidden")


def test_create_api_key_stores_only_the_hash(org):
    key = create_key("--org", "acme", "--name", "gateway")

    row = ApiKey.objects.values().get()
    assert row["name"] == "gateway"
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    secret_part = key.split("_", 2)[2]
    for column, value in row.items():
        assert secret_part not in str(value), column
    assert row["last_used_at"] is None and row["revoked_at"] is None


def test_each_key_is_new(org):
    first, second = create_key("--org", "acme"), create_key("--org", "acme")

    assert first != second
    assert ApiKey.objects.count() == 2


def test_create_api_key_for_a_team_limits_the_key_to_it(api, org):
    key = create_key("--org", "acme", "--team", "search")

    own = api.post("/v1/budget/reservations", json={"estimated_cost_usd": "1"}, headers=auth(key))
    other = api.post(
        "/v1/budget/check", json={"team": "research", "estimated_cost_usd": "1"}, headers=auth(key)
    )

    assert ApiKey.objects.get().team == Team.objects.get(org=org, slug="search")
    assert own.status_code == 201, own.text
    assert_error(other, 403, "forbidden", "team")


def test_create_api_key_with_admin_may_manage_budgets(api, org):
    key = create_key("--org", "acme", "--admin")

    response = api.put("/v1/budgets/org/acme/day", json={"limit_usd": "5"}, headers=auth(key))

    assert ApiKey.objects.get().is_admin is True
    assert response.status_code == 200, response.text
    assert api.get("/v1/budgets", headers=auth(key)).json()["budgets"][0]["limit_usd"] == "5"


@pytest.mark.django_db
def test_create_api_key_for_an_unknown_org_fails():
    with pytest.raises(CommandError, match="No organization 'nope'"):
        run("create_api_key", "--org", "nope")

    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("team", ["", "x" * 129])
def test_create_api_key_with_a_bad_team_fails(org, team):
    with pytest.raises(CommandError, match="--team"):
        run("create_api_key", "--org", "acme", "--team", team)

    assert not ApiKey.objects.exists()
    assert not Team.objects.exists()
