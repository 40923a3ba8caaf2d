"""Roles in Chromium (Playwright with Debian's chromium): a viewer sees no edit
controls and is refused with a 403 page; an org admin edits a budget through
the form's validation and the confirmation, and the audit record appears; a
team lead gets edit controls for their team only; the page at 390 px (chart
labels at least 11 px, the cost column on screen); and a 404 in the
product's look; and an org admin's page making an API key.

Skipped where the browser is missing, a failure under CI (require_browser).
Set TOLLGATE_SCREENSHOT_DIR=docs to refresh docs/dashboard-phone.png,
docs/dashboard-edit.png, docs/dashboard-org.png and docs/error-page.png.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from budgets.models import ApiKey, AuditEntry, Budget
from dashboard.models import Membership
from tests.dashboard.conftest import PASSWORD, event, record
from tests.system.test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser

PHONE = {"width": 390, "height": 844}


def test_roles_editing_phone_and_error_pages_in_a_real_browser(
    server, api, org, key, make_budget, make_user
):
    require_browser()
    record(
        api,
        key,
        [
            event(f"e{i}", cost=f"{i}.25", team=team, model="claude-3-5-sonnet-20241022")
            for i, team in enumerate(["search", "research", "search", "support"] * 3, start=1)
        ],
    )
    search = make_budget(org, "100", scope="team", team="search", period="month")
    make_budget(org, "40", scope="team", team="research", period="month")
    make_budget(org, "500", period="month")
    make_user("vera", org=org, role=Membership.Role.VIEWER)
    ann = make_user("ann", org=org, role=Membership.Role.ORG_ADMIN)
    make_user("leo", org=org, role=Membership.Role.TEAM_LEAD, teams=("search",))
    shots = os.environ.get("TOLLGATE_SCREENSHOT_DIR")

    with ThreadPoolExecutor(1) as pool:
        pool.submit(drive, server.url, Path(shots) if shots else None).result()

    search.refresh_from_db()
    assert search.limit_usd == Decimal("150")
    entry = AuditEntry.objects.filter(object_type="budget").get()
    assert (entry.actor_kind, entry.actor_user_id, entry.actor_label) == ("user", ann.pk, "ann")
    assert (entry.old["limit_usd"], entry.new["limit_usd"]) == ("100", "150")
    assert Budget.objects.count() == 3
    assert ApiKey.objects.get(name="staging gateway").org == org


def sign_in(browser, base: str, username: str, viewport: dict, errors: list[str]):
    context = browser.new_context(viewport=viewport, locale="en-US", timezone_id="UTC")
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None
    )
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector(".budget")
    return page


def drive(base: str, shots: Path | None) -> None:
    from playwright.sync_api import sync_playwright

    desk = {"width": 1440, "height": 900}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        errors: list[str] = []

        # A viewer: no edit controls, and the editing pages refuse with a 403 page.
        page = sign_in(browser, base, "vera", desk, errors)
        assert page.locator(".budget").count() == 3
        assert page.locator(".edit-link, .new-budget").count() == 0
        response = page.goto(f"{base}/dashboard/budgets/new?org=acme")
        assert response.status == 403
        assert "may only read" in page.text_content(".error-page")
        page.context.close()

        # A team lead: edit controls on their team's budget only.
        page = sign_in(browser, base, "leo", desk, errors)
        page.wait_for_selector(".edit-link")
        linked = page.eval_on_selector_all(
            ".budget:has(.edit-link)", "rows => rows.map(r => r.dataset.budget)"
        )
        assert linked == ["team:search:month"]
        page.context.close()

        # An org admin edits a budget: a wrong value is named next to its
        # field, the change is confirmed, and the audit record appears.
        page = sign_in(browser, base, "ann", desk, errors)
        assert page.locator(".edit-link").count() == 3
        page.click(".budget[data-budget='team:search:month'] .edit-link")
        page.wait_for_selector("#budget-form")
        page.fill("#id_limit_usd", "-1")
        page.click("#budget-form button[type=submit]")
        assert page.text_content("#id_limit_usd-error") == "The limit must be zero or more."
        page.fill("#id_limit_usd", "150")
        page.click("#budget-form button[type=submit]")
        page.wait_for_selector("#confirm")
        changed = page.locator("table.changes tr.changed").first.locator("td").all_text_contents()
        assert changed == ["$100.00", "$150.00"]
        if shots:
            page.screenshot(path=str(shots / "dashboard-edit.png"), full_page=True)
        page.click("button[name=confirmed]")
        page.wait_for_selector(".banner.success")
        row = page.locator("#history tbody tr").first.locator("td").all_text_contents()
        assert row[1:3] == ["ann", "update"]
        page.goto(f"{base}/")
        page.wait_for_selector(".budget[data-budget='team:search:month']")
        assert "of $150.00" in page.text_content(".budget[data-budget='team:search:month']")
        # Their org's page: a new key's secret is shown once.
        page.click("a.settings-link")
        page.fill("#key-form #id_name", "staging gateway")
        page.click("#key-form button[type=submit]")
        assert page.text_content("#new-secret").startswith("tg_")
        if shots:
            page.screenshot(path=str(shots / "dashboard-org.png"), full_page=True)
        page.context.close()

        # A phone: labels legible, the cost column on screen, no sideways scroll.
        page = sign_in(browser, base, "ann", PHONE, errors)
        page.wait_for_selector("#chart svg text")
        smallest = page.evaluate(
            """() => {
                const svg = document.querySelector('#chart svg');
                const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
                return Math.min(...[...svg.querySelectorAll('text')].map(
                    t => parseFloat(getComputedStyle(t).fontSize) * scale));
            }"""
        )
        assert smallest >= 11, smallest
        cost = page.locator(".recent thead th", has_text="Cost").bounding_box()
        assert cost is not None and cost["width"] > 0
        assert cost["x"] + cost["width"] <= PHONE["width"]
        first_cost = page.locator("#recent tr").first.locator("td.num").nth(1).bounding_box()
        assert first_cost is not None and first_cost["x"] + first_cost["width"] <= PHONE["width"]
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        if shots:
            page.screenshot(path=str(shots / "dashboard-phone.png"), full_page=True)
        # The editing form fits the phone too.
        page.click(".budget[data-budget='org:acme:month'] .edit-link")
        page.wait_for_selector("#budget-form")
        box = page.locator("#id_limit_usd").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

        # An error page in the product's look.
        response = page.goto(f"{base}/no/such/page")
        assert response.status == 404
        topbar = page.evaluate(
            "getComputedStyle(document.querySelector('.topbar')).backgroundColor"
        )
        assert topbar == "rgb(17, 24, 39)"
        assert page.text_content(".error-page .status") == "404"
        if shots:
            page.screenshot(path=str(shots / "error-page.png"))
        assert errors == []
        browser.close()
