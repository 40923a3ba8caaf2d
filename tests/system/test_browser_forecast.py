"""The budgets panel's forecasts in a real headless Chromium: each budget's
projected spend and run-out time, and the forecasts' inputs under the panel,
as GET /v1/budgets gives them (docs/forecasts.md)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from budgets.models import Budget, BudgetWindow, Team
from budgets.services import forecasts_refresh
from tests.dashboard.conftest import PASSWORD
from tests.system.test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tracking.models import HourlyRollup


@pytest.mark.slow
def test_the_budgets_panel_shows_forecasts_and_their_inputs(server, api, org, make_user):
    require_browser()
    org.time_zone = "UTC"
    org.save(update_fields=["time_zone"])
    make_user("ann", org=org)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    team = Team.objects.create(org=org, slug="search")
    # Ten hours of $2: less than a week of history, so a flat $2 an hour.
    HourlyRollup.objects.bulk_create(
        HourlyRollup(
            org=org, team=team, model="m", hour=hour - i * timedelta(hours=1), cost_usd=Decimal(2)
        )
        for i in range(1, 11)
    )
    quick = Budget.objects.create(
        org=org, scope="team", team=team, period="total", limit_usd=Decimal(30)
    )
    BudgetWindow.objects.create(
        budget=quick,
        period_start=datetime(1970, 1, 1, tzinfo=UTC),
        period_end=datetime(9999, 12, 31, tzinfo=UTC),
        spent=Decimal(20),
    )
    Budget.objects.create(org=org, scope="org", period="month", limit_usd=Decimal(1_000_000))
    forecasts_refresh()

    with ThreadPoolExecutor(1) as pool:
        lines, basis = pool.submit(read_panel, server.url).result()

    # $10 left at $2 an hour: five hours from now, in the org's zone.
    runs_out = datetime.now(UTC) + timedelta(hours=5)
    assert lines["team:search:total"].startswith("runs out ")
    shown = datetime.strptime(
        f"{runs_out.year} {lines['team:search:total'].removeprefix('runs out ')}", "%Y %b %d, %H:%M"
    ).replace(tzinfo=UTC)
    assert abs(shown - runs_out) < timedelta(minutes=2)
    assert lines["org:acme:month"].startswith("projected $")
    assert lines["org:acme:month"].endswith("at reset · not expected to run out before reset")
    assert basis == (
        "Forecasts: spend so far plus the recent hourly rate for the hours left "
        "(10 hours of history; a weekly profile after 168)."
    )


def read_panel(base: str) -> tuple[dict[str, str], str]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        page = browser.new_context(locale="en-US", timezone_id="UTC").new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/")
        page.fill("#id_username", "ann")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-ready='1']")
        lines = {
            row.get_attribute("data-budget"): row.locator(".budget-forecast").text_content()
            for row in page.locator(".budget").all()
        }
        basis = page.text_content("#forecast-basis")
        assert errors == []
        browser.close()
    return lines, basis
