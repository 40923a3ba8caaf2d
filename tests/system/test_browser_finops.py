"""What a FinOps lead sees in Chromium (Playwright with Debian's chromium):
the budget list's utilization column without scrolling at 1440 px and sorted
on a click, the budget form's team list narrowed to the picked org, where
staff land on the dashboard, and the page's export links following its range.

Skipped where the browser is missing, a failure under CI (require_browser).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from django.contrib.auth import get_user_model
from django.utils import timezone

from budgets.models import BudgetWindow, Team
from tests.dashboard.conftest import PASSWORD, event, record
from tests.system.test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser


def test_admin_and_landing_in_a_real_browser(
    server, api, org, key, make_org, make_key, make_budget
):
    require_browser()
    globex = make_org("globex", name="Globex International Holdings")
    make_org("aaa-empty")
    Team.objects.create(org=globex, slug="platform-infrastructure")
    # Long names, as real subjects have them: the row is at its widest.
    for team, limit, spent in [
        ("customer-support-automation", "100", "1"),
        ("search-relevance-experiments", "2", "1.5"),
        ("research", "10", "2"),
    ]:
        budget = make_budget(org, limit, scope="team", team=team, period="month")
        now = timezone.now()
        BudgetWindow.objects.create(
            budget=budget,
            period_start=now - timezone.timedelta(days=1),
            period_end=now + timezone.timedelta(days=1),
            spent=Decimal(spent),
        )
    record(api, key, [event("old", cost="1.00")])
    record(api, make_key(globex), [event("new", cost="2.00")])  # globex is the busiest
    get_user_model().objects.create_superuser("boss", "", PASSWORD)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(drive, server.url).result()


def drive(base: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-US")
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{base}/admin/login/?next=/admin/budgets/budget/")
        page.fill("#id_username", "boss")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#result_list")

        # Used % is on screen without scrolling sideways, and sorts on a click.
        header = page.locator("th.column-used_pct").bounding_box()
        assert header is not None and header["x"] + header["width"] <= 1440
        assert page.evaluate("document.documentElement.scrollWidth") <= 1440
        page.click("th.column-used_pct a")
        page.wait_for_url(lambda url: "o=" in url)
        used = page.locator("td.field-used_pct").all_text_contents()
        assert used == ["1.0%", "20.0%", "75.0%"]

        # The add form offers the picked org's teams only.
        page.goto(f"{base}/admin/budgets/budget/add/")
        page.select_option("#id_org", label="globex")
        offered = page.eval_on_selector_all(
            "#id_team option:not([hidden])", "options => options.map(o => o.text)"
        )
        # (Each org also has "search", made by the events recorded.)
        assert offered == ["---------", "globex/platform-infrastructure", "globex/search"]
        page.select_option("#id_org", label="acme")
        offered = page.eval_on_selector_all(
            "#id_team option:not([hidden])", "options => options.map(o => o.text)"
        )
        assert offered == [
            "---------",
            "acme/customer-support-automation",
            "acme/research",
            "acme/search",
            "acme/search-relevance-experiments",
        ]

        # Staff land on the busiest org, then on the one they last viewed;
        # the switcher lists orgs by the name it shows.
        page.goto(f"{base}/")
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#org-name").text_content() == "Globex International Holdings"
        assert page.locator("#org-switcher option").all_text_contents() == [
            "aaa-empty",
            "acme",
            "Globex International Holdings",
        ]
        page.select_option("#org-switcher", "acme")
        page.wait_for_url(lambda url: "org=acme" in url)
        page.goto(f"{base}/")
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#org-name").text_content() == "acme"
        # The export links download what the page shows.
        page.click("a[data-range='30d']")
        page.wait_for_selector("body[data-range='30d']:not([data-loading])")
        href = page.locator("a[data-export='csv']").get_attribute("href")
        assert href == "/dashboard/export?org=acme&range=30d&format=csv"
        with page.expect_download() as download:
            page.click("a[data-export='csv']")
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[0] == "section,subject,at,metric,value"
        assert "kpi,,,spend_usd,1" in lines  # acme's one event
        assert errors == []
        browser.close()
