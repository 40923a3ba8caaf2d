from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from budgets.audit import Actor
from budgets.models import Organization
from budgets.services import organization_create


class Command(BaseCommand):
    help = "Create an organization."

    def add_arguments(self, parser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--tz", default="UTC", help="Time zone for period boundaries.")
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Reject unknown teams and users instead of registering them.",
        )
        parser.add_argument("--name", default="")

    def handle(self, *args, slug: str, tz: str, strict: bool, name: str, **options) -> None:
        if Organization.objects.filter(slug=slug).exists():
            raise CommandError(f"Organization '{slug}' already exists.")
        try:
            org = organization_create(
                slug=slug, time_zone=tz, strict=strict, name=name, actor=Actor.command("create_org")
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(
            f"Created organization '{org.slug}' (time zone {org.time_zone}"
            f"{', strict' if org.strict else ''})."
        )
