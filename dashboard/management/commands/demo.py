from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from budgets.audit import Actor
from budgets.models import ApiKey, Organization
from budgets.services import api_key_create, api_key_revoke
from config.server import server_command

DEMO_ORG = "demo"
ADMIN_USERNAME = "admin"
DEMO_KEY_NAME = "demo key (replaced on every `manage.py demo`)"


class Command(BaseCommand):
    help = (
        "Set up a demo: migrate, load prices, seed a demo organization with a week of "
        "traffic, then serve Tollgate on http://127.0.0.1:8000 beside the worker "
        "(prints the admin login and an API key)."
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
            '-d \'{"team": "research", "user": "bob", "estimated_cost_usd": "0.05"}\''
        )
        self.stdout.write("")
        if no_serve:
            return
        self.serve(addrport)

    def serve(self, addrport: str) -> None:
        """Run the server (uvicorn with the production command's limits on
        headers, bodies and read times, config/server.py) and the worker
        (aggregation, reservation expiry, alert delivery) as child processes.

        This process keeps its claim on the embedded database while they run;
        on Ctrl-C all of them stop, and the database stops with the last.
        """
        sys.stdout.flush()
        manage = str(settings.BASE_DIR / "manage.py")
        children = [
            subprocess.Popen([sys.executable, manage, "run_worker", "--aggregate-every", "10"]),
            subprocess.Popen(server_command(addrport)),
        ]
        try:
            children[1].wait()
        except KeyboardInterrupt:
            pass
        finally:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                child.wait()

    def seed(self) -> Organization:
        """The demo organization with a week of traffic (first run only)."""
        org = Organization.objects.filter(slug=DEMO_ORG).first()
        if org is not None:
            self.stdout.write(f"Demo organization '{DEMO_ORG}' exists; keeping its data.")
            return org
        call_command("seed_demo", org=DEMO_ORG, days=7, events=5000, stdout=self.stdout)
        return Organization.objects.get(slug=DEMO_ORG)

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
            api_key_revoke(key=old, actor=Actor.command("demo"))
        _key, secret = api_key_create(
            org=org, is_admin=True, name=DEMO_KEY_NAME, actor=Actor.command("demo")
        )
        return secret
