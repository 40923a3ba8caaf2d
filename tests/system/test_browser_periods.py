"""Periods, filters and holds in flight in Chromium (Playwright with Debian's
chromium): the range, a custom range picked on the calendar and the filters
kept in the URL (a reload and the back button restore the view), the budgets
panel following the team filter, most used first, and a hold appearing live
then leaving on release.

Skipped where the browser is missing, a failure under CI (require_browser).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.conftest import auth
from tests.dashboard.conftest import PASSWORD, event, record
from tests.system.test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_periods_filters_and_live_holds_in_a_real_browser(
    server, api, org, key, make_user, make_budget
):
    require_browser()
    now = datetime.now(UTC)  # the org's zone is UTC
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (month - timedelta(days=1)).replace(day=1)
    custom_day = now - timedelta(days=3)
    make_budget(org, "100", period="month")  # a few %
    make_budget(org, "10", scope="team", team="search", period="total")  # 45%
    make_budget(org, "4", scope="team", team="support", period="day")  # 50%: most used
    make_budget(org, "20", scope="user", user="bob", period="day")
    record(
        api,
        key,
        [
            event("lm-search", cost="3", team="search", started_at=last_month + timedelta(hours=5)),
            event(
                "lm-support", cost="5", team="support", started_at=last_month + timedelta(days=2)
            ),
            event("custom-1", cost="1.5", team="search", started_at=custom_day),
            event("today-1", cost="2", team="support", user="bob"),
        ],
    )
    make_user("ann", org=org)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(drive, server.url, key, custom_day.date().isoformat()).result()


def drive(base: str, key: str, custom_day: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/accounts/login/?next=/%3Frange%3Dlast_month%26team%3Dsearch")
        page.fill("#id_username", "ann")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        ready = "body[data-ready='1']:not([data-loading])"

        # Last month, team search: from the URL, and again after a reload.
        for _ in range(2):
            page.wait_for_selector(f"{ready}[data-range='last_month']")
            assert page.locator("#kpi-spend").text_content() == "$3.00"
            assert page.locator("#team-filter").input_value() == "search"
            assert page.locator("a[data-range='last_month']").get_attribute("aria-current") == (
                "true"
            )
            page.reload()

        # The budgets panel follows the team: the org's budget and search's.
        page.wait_for_selector(f"{ready}[data-range='last_month']")
        shown = page.locator("#budgets .budget").evaluate_all(
            "els => els.map(e => e.dataset.budget)"
        )
        assert shown == ["team:search:total", "org:acme:month"]
        assert "team search" in page.locator("#budgets-scope").text_content()

        # Another team: its budgets, most used first.
        page.select_option("#team-filter", "support")
        page.wait_for_url(lambda url: query(url).get("team") == "support")
        page.wait_for_selector(f"{ready}")
        expect(page.locator("#budgets .budget").first).to_have_attribute(
            "data-budget", "team:support:day"
        )
        shown = page.locator("#budgets .budget").evaluate_all(
            "els => els.map(e => e.dataset.budget)"
        )
        assert shown == ["team:support:day", "org:acme:month"]
        assert "$2.00 left" in page.locator("#budgets .budget").first.text_content()
        assert page.locator("#kpi-spend").text_content() == "$5.00"

        # A custom range picked on the calendar, kept in the URL.
        page.select_option("#team-filter", "")
        page.wait_for_url(lambda url: "team" not in query(url))
        page.click("a[data-range='custom']")
        page.wait_for_selector("#custom-range:not([hidden])")
        page.fill("#range-from", custom_day)
        page.fill("#range-to", custom_day)
        page.click("#custom-range button[type=submit]")
        page.wait_for_url(lambda url: query(url).get("from") == custom_day)
        page.wait_for_selector(f"{ready}[data-range='custom']")
        expect(page.locator("#kpi-spend")).to_have_text("$1.50")
        assert query(page.url) == {"range": "custom", "from": custom_day, "to": custom_day}
        href = page.locator("a[data-export='json']").get_attribute("href")
        assert query(href) == {**query(page.url), "format": "json"}
        page.reload()
        page.wait_for_selector(f"{ready}[data-range='custom']")
        assert page.locator("#kpi-spend").text_content() == "$1.50"
        assert page.locator("#range-from").input_value() == custom_day

        # The back button, step by step: the calendar's first days, last
        # month of every team, then of team support.
        page.go_back()
        expect(page.locator("#kpi-spend")).not_to_have_text("$1.50")
        assert query(page.url)["range"] == "custom"
        page.go_back()
        expect(page).to_have_url(re.compile(r"\?range=last_month$"))
        expect(page.locator("#kpi-spend")).to_have_text("$8.00")
        page.go_back()
        expect(page).to_have_url(re.compile(r"\?range=last_month&team=support$"))
        expect(page.locator("#kpi-spend")).to_have_text("$5.00")
        assert page.locator("#team-filter").input_value() == "support"

        # A hold of team support shows up live, then leaves on release.
        with httpx.Client(base_url=base, timeout=10) as client:
            taken = client.post(
                "/v1/budget/reservations",
                json={"estimated_cost_usd": "0.75", "team": "support", "model": "gpt-4o"},
                headers=auth(key),
            )
            assert taken.status_code == 201, taken.text
            hold = taken.json()["reservation_id"]
            page.wait_for_selector(f"#holds-list tr[data-hold-id='{hold}']", timeout=6000)
            assert page.locator("#holds-count").text_content() == "1 active"
            assert page.locator("#holds-held").text_content() == "$0.75 held"
            released = client.post(f"/v1/budget/reservations/{hold}/release", headers=auth(key))
            assert released.status_code == 200
        page.wait_for_selector(f"#holds-list tr[data-hold-id='{hold}']", state="detached")
        assert page.locator("#holds-count").text_content() == "0 active"
        assert errors == []
        browser.close()
