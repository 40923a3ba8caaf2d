"""The org admin's page (GET /dashboard/org): API keys (the secret shown
once, revocation after a confirmation), the webhook (the SSRF rules of
budgets/webhooks.py) and members; each change audited with the login as
actor, and refused (403) to viewers and team leads."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from budgets.models import ApiKey, AuditEntry, Team
from dashboard.models import Membership
from tests.conftest import auth

ADMIN, LEAD, VIEWER = (Membership.Role.ORG_ADMIN, Membership.Role.TEAM_LEAD, Membership.Role.VIEWER)
PAGE = "/dashboard/org?org=acme"


@pytest.mark.parametrize("role", [VIEWER, LEAD])
def test_only_org_admins_reach_the_page_and_its_changes(client, org, make_user, role):
    client.force_login(make_user("leo", org=org, role=role, teams=("search",)))
    make_user("bob")

    answers = [
        client.get(PAGE).status_code,
        client.post("/dashboard/org/keys?org=acme", {"name": "x"}).status_code,
        client.post("/dashboard/org/webhook?org=acme", {"webhook_url": ""}).status_code,
        client.post("/dashboard/org/members?org=acme", {"username": "bob", "role": ADMIN}),
    ]

    assert [a if isinstance(a, int) else a.status_code for a in answers] == [403] * 4
    assert not ApiKey.objects.exists() and not Membership.objects.filter(user__username="bob")
    assert b"Keys, webhook, members" not in client.get("/").content


def test_a_new_keys_secret_is_shown_once_and_the_key_is_audited(client, org, make_user):
    Team.objects.create(org=org, slug="search")
    ann = make_user("ann", org=org, role=ADMIN)
    client.force_login(ann)

    created = client.post(
        "/dashboard/org/keys?org=acme",
        {"name": "ci gateway", "team": Team.objects.get().pk, "is_admin": "on"},
    )

    key = ApiKey.objects.get()
    secret = created.context["new_secret"]
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    assert secret in created.content.decode() and key.matches(secret)
    assert (key.name, key.team.slug, key.is_admin) == ("ci gateway", "search", True)
    assert secret not in client.get(PAGE).content.decode()
    entry = AuditEntry.objects.get(object_type="api_key")
    assert (entry.action, entry.actor_user_id, entry.actor_label) == ("create", ann.pk, "ann")


def test_a_key_is_revoked_after_a_confirmation(client, org, make_user, make_key):
    make_key(org)
    key = ApiKey.objects.get()
    client.force_login(make_user("ann", org=org, role=ADMIN))
    url = f"/dashboard/org/keys/revoke?org=acme&key={key.lookup_id}"

    confirm = client.get(url)
    key.refresh_from_db()
    assert confirm.status_code == 200 and b"Revoke this key?" in confirm.content
    assert key.revoked_at is None

    done = client.post(url, {"confirmed": "1"})

    key.refresh_from_db()
    assert done.status_code == 302 and key.revoked_at is not None
    entry = AuditEntry.objects.get(object_type="api_key", action="revoke")
    assert entry.actor_label == "ann"


def test_the_webhook_follows_the_ssrf_rules_and_is_audited(client, org, make_user):
    client.force_login(make_user("ann", org=org, role=ADMIN))

    refused = client.post("/dashboard/org/webhook?org=acme", {"webhook_url": "http://127.0.0.1/x"})
    saved = client.post(
        "/dashboard/org/webhook?org=acme", {"webhook_url": "https://93.184.216.34/hooks/abc"}
    )

    org.refresh_from_db()
    assert refused.status_code == 422
    assert b'id="id_webhook_url-error"' in refused.content
    assert saved.status_code == 302 and org.webhook_url == "https://93.184.216.34/hooks/abc"
    (entry,) = AuditEntry.objects.filter(object_type="organization", action="update")
    assert entry.actor_label == "ann" and entry.new["webhook_url"].startswith("https://93.184")


def test_members_are_added_and_their_roles_changed_with_an_audit_record(client, org, make_user):
    Team.objects.create(org=org, slug="search")
    ann = make_user("ann", org=org, role=ADMIN)
    client.force_login(ann)
    make_user("bob")

    unknown = client.post("/dashboard/org/members?org=acme", {"username": "zed", "role": VIEWER})
    added = client.post("/dashboard/org/members?org=acme", {"username": "bob", "role": VIEWER})
    again = client.post("/dashboard/org/members?org=acme", {"username": "bob", "role": VIEWER})
    promoted = client.post(
        "/dashboard/org/members/role?org=acme&user=bob",
        {"role": LEAD, "teams": [Team.objects.get().pk]},
    )
    own = client.post("/dashboard/org/members/role?org=acme&user=ann", {"role": VIEWER})

    assert unknown.status_code == 422 and b"No login &#x27;zed&#x27;" in unknown.content
    assert added.status_code == 302
    assert again.status_code == 422 and b"already belongs to this organization" in again.content
    assert promoted.status_code == 302 and own.status_code == 403
    bob = Membership.objects.get(user=User.objects.get(username="bob"))
    assert bob.role == LEAD and [t.slug for t in bob.teams.all()] == ["search"]
    assert Membership.objects.get(user=ann).role == ADMIN
    create, update = AuditEntry.objects.filter(object_type="membership").order_by("id")
    assert (create.action, create.object_id, create.actor_label) == ("create", "bob", "ann")
    assert update.old == {"user": "bob", "role": "viewer", "teams": []}
    assert update.new == {"user": "bob", "role": "team_lead", "teams": ["search"]}
    page = client.get(PAGE).content.decode()
    assert 'data-member="bob"' in page


def test_member_changes_are_read_through_the_audit_api(api, client, org, admin_key, make_user):
    client.force_login(make_user("ann", org=org, role=ADMIN))
    make_user("bob")
    client.post("/dashboard/org/members?org=acme", {"username": "bob", "role": LEAD})

    response = api.get("/v1/audit", params={"object": "membership:bob"}, headers=auth(admin_key))

    assert response.status_code == 200
    (entry,) = response.json()["entries"]
    assert entry["object"] == {"type": "membership", "id": "bob"}
    assert entry["actor"]["label"] == "ann" and entry["actor"]["kind"] == "user"
    assert entry["new"] == {"user": "bob", "role": "team_lead", "teams": []}
