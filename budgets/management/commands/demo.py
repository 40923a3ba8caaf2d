from __future__ import annotations

import secrets
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from budgets.models import ApiKey, Budget, EndUser, Organization, Team
from budgets.services import api_key_create, organization_create

DEMO_ORG = "demo"
ADMIN_USERNAME = "admin"
DEMO_KEY_NAME = "demo key (replaced on every `manage.py demo`)"


class Command(BaseCommand):
    help = (
        "Set up a demo: migrate, load prices, seed a demo organization, then serve "
        "Tollgate on http://127.0.0.1:8000 (prints the admin login and an API key)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument("--no-serve", action="store_true", help="Only set up, don't serve.")

    def handle(self, *args, addrport: str, no_serve: bool, **options) -> None:
        self.stdout.write("Migrating the database ...")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("load_prices", stdout=self.stdout)
        org = self.seed()
        password = self.admin_password()
        key = self.demo_key(org)
        base = f"http://{addrport}"
        self.stdout.write(self.style.SUCCESS("\nTollgate demo is ready."))
        self.stdout.write(f"  Dashboard:  {base}/")
        self.stdout.write(f"  Admin:      {base}/admin/   login: {ADMIN_USERNAME} / {password}")
        self.stdout.write(f"  API key:    {key}   (organization '{org.slug}', admin)")
        self.stdout.write("  Try it:")
        self.stdout.write(
            f"    curl -s -X POST {base}/v1/budget/reservations -H 'Authorization: Bearer {key}' "
            "-H 'Content-Type: application/json' "
            '-d \'{"team": "search", "user": "alice", "estimated_cost_usd": "0.05"}\''
        )
        self.stdout.write("")
        if no_serve:
            return
        self.serve(addrport)

    def serve(self, addrport: str) -> None:
        """Run the development server (daphne via runserver) as a child process.

        This process keeps its claim on the embedded database while the server
        runs; on Ctrl-C both stop, and the database stops with the last of them.
        """
        sys.stdout.flush()
        manage = str(settings.BASE_DIR / "manage.py")
        server = subprocess.Popen([sys.executable, manage, "runserver", addrport])
        try:
            server.wait()
        except KeyboardInterrupt:
            server.wait()

    @transaction.atomic
    def seed(self) -> Organization:
        org = Organization.objects.filter(slug=DEMO_ORG).first()
        if org is not None:
            self.stdout.write(f"Demo organization '{DEMO_ORG}' exists; keeping its data.")
            return org
        org = organization_create(slug=DEMO_ORG, name="Demo Inc.", time_zone="UTC")
        teams = {
            slug: Team.objects.create(org=org, slug=slug, name=slug.title())
            for slug in ("search", "support", "research")
        }
        users = {
            uid: EndUser.objects.create(org=org, external_id=uid)
            for uid in ("alice", "bob", "carol", "dave")
        }
        Budget.objects.create(org=org, scope="org", period="month", limit_usd=Decimal("500"))
        Budget.objects.create(
            org=org, scope="team", team=teams["search"], period="day", limit_usd=Decimal("50")
        )
        Budget.objects.create(
            org=org,
            scope="team",
            team=teams["support"],
            period="day",
            limit_usd=Decimal("20"),
            soft_limit_pct=70,
        )
        Budget.objects.create(
            org=org,
            scope="team",
            team=teams["research"],
            period="week",
            limit_usd=Decimal("100"),
            enforce=False,
        )
        Budget.objects.create(
            org=org, scope="user", user=users["alice"], period="day", limit_usd=Decimal("5")
        )
        # A few live holds so the windows show something.
        holds = [
            ("search", "alice", "1.20"),
            ("search", "bob", "4.50"),
            ("support", "carol", "12.00"),
            ("research", "dave", "30.00"),
        ]
        with connection.cursor() as cursor:
            for team, user, amount in holds:
                cursor.execute(
                    "SELECT tollgate_decide(%s, %s, false, %s, %s, %s, NULL, NULL, NULL, true, 3600, NULL)",
                    [org.id, org.time_zone, team, user, Decimal(amount)],
                )
        self.stdout.write(f"Seeded demo organization '{DEMO_ORG}': 3 teams, 4 users, 5 budgets.")
        return org

    def admin_password(self) -> str:
        """The demo admin's password, kept in the git-ignored .tollgate/ folder."""
        path = Path(settings.DEMO_ADMIN_PASSWORD_FILE)
        User = get_user_model()
        user = User.objects.filter(username=ADMIN_USERNAME).first()
        if user is not None and path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(9)
        if user is None:
            User.objects.create_superuser(ADMIN_USERNAME, "", password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password

    def demo_key(self, org: Organization) -> str:
        """A fresh admin key each run (secrets are not stored, so it can't be shown
        again); the previous demo key is revoked."""
        for old in ApiKey.objects.filter(org=org, name=DEMO_KEY_NAME, revoked_at__isnull=True):
            old.revoke()
        _key, secret = api_key_create(org=org, is_admin=True, name=DEMO_KEY_NAME)
        return secret
