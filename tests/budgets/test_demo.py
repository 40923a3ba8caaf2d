from __future__ import annotations

import io

from django.core.management import call_command

from budgets.models import ApiKey, Budget, Organization
from tests.conftest import auth


def test_demo_seeds_once_and_prints_a_working_key(api, settings, tmp_path):
    settings.DEMO_ADMIN_PASSWORD_FILE = str(tmp_path / "password")
    out = io.StringIO()
    call_command("demo", no_serve=True, stdout=out)
    call_command("demo", no_serve=True, stdout=io.StringIO())

    text = out.getvalue()
    key = next(line.split()[2] for line in text.splitlines() if line.strip().startswith("API key:"))
    password = (tmp_path / "password").read_text().strip()
    assert f"login: admin / {password}" in text
    assert Organization.objects.filter(slug="demo").count() == 1
    assert Budget.objects.filter(org__slug="demo").count() == 8
    # Each run replaces the demo key: the first one is revoked.
    assert ApiKey.objects.filter(org__slug="demo", revoked_at__isnull=True).count() == 1
    assert api.get("/v1/budgets", headers=auth(key)).status_code == 401
