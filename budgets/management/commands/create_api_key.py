from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from budgets.audit import Actor
from budgets.models import Organization
from budgets.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key. The key is printed alone on the last line, once; only its hash is stored."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--org", required=True, help="Organization slug.")
        parser.add_argument("--team", help="Limit the key to this team.")
        parser.add_argument("--admin", action="store_true", help="Allow managing budgets.")
        parser.add_argument("--name", default="")

    def handle(self, *args, org: str, team: str | None, admin: bool, name: str, **options) -> None:
        try:
            organization = Organization.objects.get(slug=org)
        except Organization.DoesNotExist:
            raise CommandError(f"No organization '{org}'. Create it with create_org.") from None
        if team is not None and not 1 <= len(team) <= 128:
            raise CommandError("--team must be 1 to 128 characters.")
        _key, secret = api_key_create(
            org=organization,
            team_slug=team,
            is_admin=admin,
            name=name,
            actor=Actor.command("create_api_key"),
        )
        scope = f"team '{team}'" if team else "the whole organization"
        self.stdout.write(
            f"API key for {organization.slug}, {scope}"
            f"{', admin' if admin else ''}. Store it now; it is not shown again:"
        )
        self.stdout.write(secret)
