"""The dashboard's "Spend by tag" card in Chromium (Playwright with Debian's
chromium): a member picks a reported tag, the card shows its values' spend
(kept in the URL), and the chargeback link downloads last month by team and
tag, equal to the raw events. The tag filter (`tag=name=value`): picked in
the toolbar, it narrows the KPIs to the tag's spend, says that top users
cannot follow it, and comes back from the URL on a reload.

Skipped where the browser is missing, a failure under CI (require_browser).
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from tests.dashboard.conftest import PASSWORD, event, record
from tests.system.test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.tracking.test_usage_tags import db_chargeback


def test_tag_card_and_chargeback_download_in_a_real_browser(server, api, org, key, make_user):
    require_browser()
    org.report_tags = ["customer"]
    org.save(update_fields=["report_tags"])
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    record(
        api,
        key,
        [
            event("a", cost="1.25", started_at=now - timedelta(minutes=5), tags={"customer": "acme"}),
            event("b", cost="0.5", started_at=now - timedelta(minutes=4), tags={"customer": "globex"}),
            event("c", cost="2", started_at=last_month + timedelta(days=2), team="support",
                  tags={"customer": "acme"}),
            event("d", cost="3", started_at=last_month + timedelta(days=3)),
        ],
    )  # fmt: skip
    make_user("ann", org=org)

    with ThreadPoolExecutor(1) as pool:
        lines = pool.submit(drive, server.url).result()

    got = {(r["team"], r["tag:customer"]): Decimal(r["cost_usd"]) for r in csv.DictReader(lines)}
    expected = db_chargeback(org, last_month, this_month)
    assert got == {k: v[3] for k, v in expected.items()}
    assert got == {("search", ""): Decimal(3), ("support", "acme"): Decimal(2)}


def drive(base: str) -> list[str]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/accounts/login/?next=/%3Frange%3D24h")
        page.fill("#id_username", "ann")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#chargeback").is_hidden()

        page.select_option("#tag-group", "customer")
        page.wait_for_url(lambda url: "group_tag=customer" in url)
        page.wait_for_selector("#tag-values tr")
        names = page.locator("#tag-values td.name").all_text_contents()
        assert names == ["acme", "globex"]
        assert page.locator("#tag-values td.num").first.text_content() == "$1.25"

        # The URL keeps the choice: a reload shows it again.
        page.reload()
        page.wait_for_selector("#tag-values tr")
        assert page.locator("#tag-group").input_value() == "customer"

        link = page.locator("#chargeback")
        assert link.get_attribute("href") == "/dashboard/export/chargeback?tag=customer"
        with page.expect_download() as download:
            link.click()
        lines = Path(download.value.path()).read_text().splitlines()

        # The tag filter: a reported name, then a value (acme's spend in the
        # last 24 h is event "a" only).
        page.select_option("#tag-name-filter", "customer")
        page.fill("#tag-value-filter", "acme")
        page.press("#tag-value-filter", "Enter")
        page.wait_for_url(lambda url: "tag=customer%3Dacme" in url)
        expect(page.locator("#kpi-spend")).to_contain_text("1.25")
        assert "not split by tag" in page.locator("#top-users-note").text_content()
        # The card split by the same name shows the one value.
        expect(page.locator("#tag-values td.name")).to_have_text(["acme"])
        assert "customer=acme" in page.locator("#tag-filter-note").text_content()
        assert "tag customer=acme" in page.locator("#budgets-scope").text_content()
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        expect(page.locator("#kpi-spend")).to_contain_text("1.25")
        assert page.locator("#tag-name-filter").input_value() == "customer"
        assert page.locator("#tag-value-filter").input_value() == "acme"
        assert "tag=customer%3Dacme" in page.locator("a[data-export=csv]").get_attribute("href")
        # Cleared: every request again ($1.75 in the last 24 h).
        page.select_option("#tag-name-filter", "")
        page.wait_for_url(lambda url: "tag=" not in url.split("?")[-1].replace("group_tag=", ""))
        expect(page.locator("#kpi-spend")).to_contain_text("1.75")
        assert page.locator("#tag-filter-note").is_hidden()
        assert errors == []
        browser.close()
    return lines
