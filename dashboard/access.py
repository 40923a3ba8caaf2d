"""Who may see which organization's dashboard data, and change what in it.

One rule (`org_choice`) for the three doors: the page (sync view), the
summary endpoint (async, on the hot-path router) and the live websocket.
A login that is not staff sees its own organization only (`Membership`);
staff may pick any with `org=<slug>`.

The summary endpoint accepts a Django session as well as an API key. It reads
the session through the hot-path pool (`dashboard_session`, `dashboard_user`)
rather than the ORM, which would put a thread hop and a new connection on the
event loop's path; it checks what `django.contrib.auth.get_user` checks: the
session's signature, its expiry, the authentication backend, an active user,
and the HMAC of the password hash (a password change ends other sessions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import AbstractBaseUser, User
from django.db.models import F, OuterRef, Subquery
from django.http.cookie import parse_cookie
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from budgets.models import Organization
from config.hotpath import db
from config.hotpath.errors import ApiError
from dashboard.models import LastViewedOrg, Membership
from tracking.models import RequestEvent

# Engines that keep sessions in django_session, which the pool can read.
DB_SESSION_ENGINES = ("config.sessions", "django.contrib.sessions.backends.db")
_SESSION_KEY = re.compile(r"[a-z0-9]{8,40}")


@dataclass(frozen=True)
class DashboardUser:
    user_id: int
    is_staff: bool
    org_id: int | None  # the login's organization (Membership), if any
    org_slug: str | None


def org_choice(
    *, is_staff: bool, member_org_id: int | None, member_slug: str | None, requested: str | None
) -> tuple[int | None, str | None]:
    """The organization to show, as (id, slug) with one of them set, or
    (None, None) for staff with no organization of their own: the first one.
    Raises ApiError 403 for a login that may not see the requested org."""
    if is_staff:
        if requested:
            return None, requested
        return member_org_id, None
    if member_org_id is None:
        raise ApiError(403, "forbidden", "This login belongs to no organization.")
    if requested and requested != member_slug:
        raise ApiError(403, "forbidden", "This login may not see that organization.")
    return member_org_id, None


def organization_for(user: AbstractBaseUser, requested: str | None) -> Organization:
    """Sync twin for the page and the websocket (ORM). Raises ApiError 403/404."""
    membership = Membership.objects.select_related("org").filter(user_id=user.pk).first()
    org_id, slug = org_choice(
        is_staff=user.is_staff,
        member_org_id=membership.org_id if membership else None,
        member_slug=membership.org.slug if membership else None,
        requested=requested,
    )
    orgs = Organization.objects.order_by("slug")
    if org_id is not None:
        orgs = orgs.filter(id=org_id)
    if slug is not None:
        orgs = orgs.filter(slug=slug)
    org = orgs.first()
    if org is None:
        raise ApiError(404, "not_found", "Unknown organization.", field="org")
    return org


@dataclass(frozen=True)
class Powers:
    """What a login may change in one organization on the dashboard, by its
    role there (Membership.role). Staff act as org admins of every org.

    A team lead changes the team-scope budgets of the teams they lead, and
    nothing else: user budgets stay with org admins, because an end user is
    not one team's (their requests may carry any team), and so do key budgets
    and the org's budgets."""

    role: str
    team_ids: frozenset[int]

    @property
    def is_org_admin(self) -> bool:
        return self.role == Membership.Role.ORG_ADMIN

    @property
    def edits_budgets(self) -> bool:
        return self.is_org_admin or (self.role == Membership.Role.TEAM_LEAD and bool(self.team_ids))

    def may_edit_budget(self, scope: str, team_id: int | None) -> bool:
        if self.is_org_admin:
            return True
        return (
            self.role == Membership.Role.TEAM_LEAD and scope == "team" and team_id in self.team_ids
        )


NO_POWERS = Powers(role=Membership.Role.VIEWER, team_ids=frozenset())


def powers_for(user: AbstractBaseUser, org: Organization) -> Powers:
    """The login's powers in `org` (one it may see: organization_for)."""
    if user.is_staff:
        return Powers(role=Membership.Role.ORG_ADMIN, team_ids=frozenset())
    membership = Membership.objects.filter(user_id=user.pk, org=org).first()
    if membership is None:
        return NO_POWERS
    teams: frozenset[int] = frozenset()
    if membership.role == Membership.Role.TEAM_LEAD:
        teams = frozenset(membership.teams.filter(org=org).values_list("id", flat=True))
    return Powers(role=membership.role, team_ids=teams)


def landing_org(user: AbstractBaseUser) -> str | None:
    """Where staff land without `?org=`: the org they last viewed, else their
    own (Membership), else the one that received an event last (each org's
    newest from its (org, received_at) index), else the first by slug."""
    last = LastViewedOrg.objects.filter(user_id=user.pk).select_related("org").first()
    if last is not None:
        return last.org.slug
    membership = Membership.objects.select_related("org").filter(user_id=user.pk).first()
    if membership is not None:
        return membership.org.slug
    newest = RequestEvent.objects.filter(org=OuterRef("pk")).order_by("-received_at")
    busiest = (
        Organization.objects.annotate(active_at=Subquery(newest.values("received_at")[:1]))
        .order_by(F("active_at").desc(nulls_last=True), "slug")
        .values_list("slug", flat=True)
        .first()
    )
    return busiest


def remember_viewed(user: AbstractBaseUser, org: Organization) -> None:
    LastViewedOrg.objects.update_or_create(
        user_id=user.pk, defaults={"org": org, "viewed_at": timezone.now()}
    )


def switcher_orgs() -> list[Organization]:
    """Every org, as the switcher lists them: by the name shown, then slug."""
    orgs = Organization.objects.only("slug", "name")
    return sorted(orgs, key=lambda o: ((o.name or o.slug).casefold(), o.slug))


def _session_store_class() -> type:
    return import_module(settings.SESSION_ENGINE).SessionStore


async def aauthenticate_session(cookie_header: bytes | None) -> DashboardUser:
    """The signed-in dashboard user of a request's session cookie (one or two
    primary-key reads on the pool). Raises ApiError 401 when there is none."""
    if settings.SESSION_ENGINE not in DB_SESSION_ENGINES:
        # The pool reads django_session; another engine would need its own reader.
        raise ApiError(401, "unauthenticated", "Send an API key: 'Authorization: Bearer <key>'.")
    cookies = parse_cookie(cookie_header.decode("latin-1")) if cookie_header else {}
    session_key = cookies.get(settings.SESSION_COOKIE_NAME)
    # Django's keys are 32 of [a-z0-9]; anything else (a quoted cookie can
    # carry "\000", a NUL that PostgreSQL text refuses) is no session.
    if not session_key or not _SESSION_KEY.fullmatch(session_key):
        raise _signed_out()
    session_data = await db.fetch_value("dashboard_session", {"session_key": session_key})
    if session_data is None:
        raise _signed_out()
    # decode() checks the signature; it returns {} for a tampered session.
    session = _session_store_class()().decode(session_data)
    user_id = session.get(SESSION_KEY)
    if session.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS or not user_id:
        raise _signed_out()
    try:
        user_pk = int(user_id)
    except (TypeError, ValueError):
        raise _signed_out() from None
    row = await db.fetch_one("dashboard_user", {"user_id": user_pk})
    if row is None:
        raise _signed_out()
    _id, password, is_active, is_staff, org_id, org_slug = row
    if not is_active or not _session_hash_matches(session.get(HASH_SESSION_KEY), password):
        raise _signed_out()
    return DashboardUser(user_id=user_pk, is_staff=is_staff, org_id=org_id, org_slug=org_slug)


def _session_hash_matches(session_hash: str | None, password: str) -> bool:
    if not session_hash:
        return False
    user = User(password=password)  # unsaved: only to compute the HMAC
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    return any(
        constant_time_compare(session_hash, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    )


def _signed_out() -> ApiError:
    return ApiError(
        401, "unauthenticated", "Sign in, or send an API key: 'Authorization: Bearer <key>'."
    )
