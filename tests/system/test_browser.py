"""The dashboard in a real headless Chromium (Debian's, driven by Playwright):
sign in, see the numbers the database holds, get a live event sent through
the API, change the range, and count the page's data requests.

Skipped where /usr/bin/chromium or Playwright is missing (a laptop), but a
failure under CI (the CI environment variable), which installs both.
Set TOLLGATE_SCREENSHOT=docs/dashboard.png to refresh the screenshot.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.db.models import Sum

from budgets.models import Alert, Budget, Organization
from tests.dashboard.conftest import PASSWORD, event, record
from tests.dashboard.timing import summary_timing
from tracking.models import Price, RequestEvent

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed"
    else:
        if CHROMIUM.exists():
            return
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"The browser test must run in CI, but {reason}.")
    pytest.skip(reason)


def usd(amount: Decimal) -> str:
    """As the page shows money (Intl.NumberFormat en-US, USD)."""
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def spend_since(org: Organization, since: datetime, **filters: str) -> Decimal:
    events = RequestEvent.objects.filter(org=org, started_at__gte=since, **filters)
    return events.aggregate(s=Sum("cost_usd"))["s"] or Decimal(0)


@dataclass(frozen=True)
class Expected:
    """What the database holds, as the page must show it."""

    week: Decimal  # spend of the 7d range
    search_week: Decimal  # the same, of team "search"
    today: Decimal
    all_time: Decimal  # the 30d range holds every seeded event
    requests_in_week: int
    newest: str  # event id at the top of the recent list


@pytest.mark.slow
def test_dashboard_in_a_real_browser(server, api, make_key, make_user, capsys):
    require_browser()
    call_command("load_prices", stdout=io.StringIO())
    call_command("seed_demo", org="demo", days=7, events=3000, stdout=io.StringIO())
    demo = Organization.objects.get(slug="demo")
    key = make_key(demo)
    make_user("ann", org=demo)
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    week_start = today - timedelta(days=6)
    expected = Expected(
        week=spend_since(demo, week_start),
        search_week=spend_since(demo, week_start, team__slug="search"),
        today=spend_since(demo, today),
        all_time=spend_since(demo, now - timedelta(days=30)),
        requests_in_week=RequestEvent.objects.filter(org=demo, started_at__gte=week_start).count(),
        newest=RequestEvent.objects.filter(org=demo).order_by("-started_at")[0].event_id,
    )

    # Playwright's sync API runs an event loop in its thread, which Django's
    # connections must not see: the browser runs in a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        timings, shot = pool.submit(drive_browser, server.url, api, key, expected).result()

    with capsys.disabled():
        print(
            f"\ndashboard time to interactive: first visit {timings[0]:.0f} ms, warm {timings[1]:.0f} ms"
        )
    target = os.environ.get("TOLLGATE_SCREENSHOT")
    if target:
        Path(target).write_bytes(shot)


def drive_browser(
    base: str, api: httpx.Client, key: str, expected: Expected
) -> tuple[list[float], bytes]:
    """Sign in, check the page against `expected`, take a live event and a
    range change; returns the times to interactive (ms) and a screenshot."""
    from playwright.sync_api import sync_playwright

    budgets = Budget.objects.filter(org__slug="demo").count()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        context = browser.new_context(
            viewport={"width": 1440, "height": 1100}, locale="en-US", timezone_id="UTC"
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # The Content-Security-Policy must not block anything the page needs.
        page.on(
            "console",
            lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        data_requests: list[str] = []
        page.on(
            "request",
            # The holds panel re-reads its light endpoint on a timer (holds.js).
            lambda r: (
                data_requests.append(r.url)
                if r.resource_type in ("fetch", "xhr") and "/v1/dashboard/holds" not in r.url
                else None
            ),
        )

        page.goto(f"{base}/")
        assert "/accounts/login/" in page.url
        page.fill("#id_username", "ann")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        interactive = "performance.getEntriesByName('tollgate-interactive')[0].startTime"
        page.wait_for_selector("body[data-ready='1']")
        timings = [page.evaluate(interactive)]  # first visit: nothing cached
        data_requests.clear()
        page.goto(f"{base}/?range=7d")  # again: script and styles cached
        page.wait_for_selector("body[data-ready='1']")
        timings.append(page.evaluate(interactive))
        assert len(data_requests) == 1, data_requests
        assert "/v1/dashboard/summary?range=7d" in data_requests[0]
        assert page.text_content("#kpi-spend") == usd(expected.week)
        assert page.text_content("#kpi-today") == usd(expected.today)
        assert page.text_content("#kpi-requests") == f"{expected.requests_in_week:,}"
        assert page.locator(f"tr[data-event-id='{expected.newest}']").count() == 1
        assert page.locator(".budget").count() == budgets
        assert page.locator("#chart svg rect").count() > 0

        page.wait_for_selector("body[data-live='1']")
        record(api, key, [event("live-browser-1", cost="1.25", team="search")])
        page.wait_for_selector("tr[data-event-id='live-browser-1']", timeout=5000)
        page.wait_for_function(
            "expected => document.getElementById('kpi-spend').textContent === expected",
            arg=usd(expected.week + Decimal("1.25")),
            timeout=5000,
        )
        assert page.text_content("#kpi-requests") == f"{expected.requests_in_week + 1:,}"
        search_row = page.locator("#top-teams tr").filter(has_text="search")
        assert search_row.locator("td.num").first.text_content() == usd(
            expected.search_week + Decimal("1.25")
        )
        assert len(data_requests) == 1, "the live event came over the websocket"
        page.wait_for_timeout(300)
        shot = page.screenshot(full_page=True)

        page.click("a[data-range='30d']")
        page.wait_for_url(lambda url: url.endswith("/?range=30d"))
        page.wait_for_selector("body[data-range='30d']:not([data-loading])")
        assert page.text_content("#kpi-spend") == usd(expected.all_time + Decimal("1.25"))
        assert len(data_requests) == 2
        page.go_back()
        page.wait_for_selector("body[data-range='7d']:not([data-loading])")
        assert "range=7d" in page.url
        assert errors == []
        browser.close()
    return timings, shot


@pytest.fixture(scope="module")
def keeping_server(live_server_factory):
    return live_server_factory(DASHBOARD_SUMMARY_MAX_AGE_MS="60000")


@pytest.mark.slow
def test_a_page_opened_on_a_kept_summary_misses_nothing(keeping_server, org, make_key, make_user):
    """Summaries kept for a minute: a second page gets the first page's summary,
    computed before an event it must show all the same, and once."""
    require_browser()
    key = make_key(org)
    make_user("ann", org=org)
    with httpx.Client(base_url=keeping_server.url, timeout=10) as api:
        record(api, key, [event("old", cost="2", team="search")])
        with ThreadPoolExecutor(1) as pool:
            pool.submit(drive_two_pages, keeping_server.url, api, key).result()


def drive_two_pages(base: str, api: httpx.Client, key: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        context = browser.new_context(locale="en-US", timezone_id="UTC")
        first = context.new_page()
        errors: list[str] = []
        first.on("pageerror", lambda exc: errors.append(str(exc)))
        first.goto(f"{base}/accounts/login/?next=/%3Frange%3D24h")
        first.fill("#id_username", "ann")
        first.fill("#id_password", PASSWORD)
        first.click("button[type=submit]")
        first.wait_for_selector("body[data-ready='1'][data-live='1']")
        assert first.text_content("#kpi-spend") == "$2.00"

        # After the first page's summary was computed and kept: the second
        # page gets that summary, and its socket joins after this was sent.
        record(api, key, [event("between", cost="1.25", team="search")])
        first.wait_for_selector("tr[data-event-id='between']", timeout=5000)
        assert first.text_content("#kpi-spend") == "$3.25"

        second = context.new_page()
        second.on("pageerror", lambda exc: errors.append(str(exc)))
        timings: list[str] = []
        second.on(
            "response",
            lambda r: (
                timings.append(summary_timing(r.headers))
                if "/v1/dashboard/summary" in r.url
                else None
            ),
        )
        second.goto(f"{base}/?range=24h")
        second.wait_for_selector("body[data-ready='1'][data-live='1']")
        assert timings == ['summary;desc="reused"']
        assert second.text_content("#kpi-spend") == "$3.25"
        assert second.text_content("#kpi-requests") == "2"
        assert second.locator("tr[data-event-id='between']").count() == 1
        search = second.locator("#top-teams tr").filter(has_text="search")
        assert search.locator("td.num").first.text_content() == "$3.25"

        # And from now on, live on both, once.
        record(api, key, [event("later", cost="0.5", team="search")])
        for page in (first, second):
            page.wait_for_selector("tr[data-event-id='later']", timeout=5000)
            assert page.text_content("#kpi-spend") == "$3.75"
            assert page.text_content("#kpi-requests") == "3"

        # The page keeps what it heard for the next load: a new summary that
        # saw those events (7d, computed now) does not get them again, the
        # kept 24h one (computed before two of them) does.
        first.click("a[data-range='7d']")
        first.wait_for_selector("body[data-range='7d']:not([data-loading])")
        assert first.text_content("#kpi-spend") == "$3.75"
        first.go_back()
        first.wait_for_selector("body[data-range='24h']:not([data-loading])")
        assert first.text_content("#kpi-spend") == "$3.75"
        assert first.text_content("#kpi-requests") == "3"
        assert errors == []
        browser.close()


@pytest.mark.slow
def test_unpriced_usage_and_alerts_in_a_real_browser(server, api, org, key, make_budget, make_user):
    """The alert line says when each alert fired (an old one reads as old),
    the unpriced card shows dollars and model names, and a live event of a
    new model with no price adds to both without a reload."""
    require_browser()
    # The fallback rates are the catalog's highest: $2.50/M input, $10/M output.
    Price.objects.create(
        provider="openai",
        model="gpt-4o",
        input_per_token=Decimal("0.0000025"),
        output_per_token=Decimal("0.00001"),
    )
    make_user("ann", org=org)
    make_budget(org, "1", scope="team", team="search", soft_limit_pct=50)
    record(api, key, [event("paid", cost="0.6", team="search")])  # a soft alert
    record(api, key, [event("mystery-1", cost=None, model="tg-mystery", usage=BIG, team=None)])
    soft = Alert.objects.select_related("window").get(kind="soft")
    soft.created_at -= timedelta(hours=30)  # yesterday's
    soft.save(update_fields=["created_at"])
    unpriced = Alert.objects.get(kind="unpriced_model")

    with ThreadPoolExecutor(1) as pool:
        pool.submit(drive_unpriced, server.url, api, key, soft, unpriced).result()


# 100,000 input x $2.50/M + 20,000 output x $10/M = $0.45 at the fallback rates.
BIG = {"input_tokens": 100_000, "output_tokens": 20_000}


def fired(at: datetime) -> str:
    """As the page writes when an alert fired, in the org's zone (UTC)."""
    return f"{at:%b} {at.day}, {at:%H:%M} UTC"


def drive_unpriced(base: str, api: httpx.Client, key: str, soft: Alert, unpriced: Alert) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        context = browser.new_context(locale="en-US", timezone_id="UTC")
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        data_requests: list[str] = []
        page.on(
            "request",
            # The holds panel re-reads its light endpoint on a timer (holds.js).
            lambda r: (
                data_requests.append(r.url)
                if r.resource_type in ("fetch", "xhr") and "/v1/dashboard/holds" not in r.url
                else None
            ),
        )
        page.goto(f"{base}/accounts/login/?next=/%3Frange%3D24h")
        page.fill("#id_username", "ann")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("body[data-ready='1'][data-live='1']")

        # The alert line: newest first, each with when it fired.
        lines = page.locator("#alerts li")
        assert lines.count() == 2
        first, second = lines.nth(0), lines.nth(1)
        assert first.get_attribute("data-kind") == "unpriced_model"
        assert first.locator("time").text_content() == f"{fired(unpriced.created_at)} (just now)"
        assert first.text_content().endswith(
            " · model tg-mystery has no price: its first use was charged $0.45"
        )
        assert second.get_attribute("data-kind") == "soft"
        assert second.locator("time").text_content() == f"{fired(soft.created_at)} (30 h ago)"
        day = soft.window.period_start  # the org's zone is UTC
        assert second.text_content().endswith(
            f" · team budget search (day of {day:%b} {day.day}) reached its soft limit: "
            "$0.60 of $1.00"
        )

        # The unpriced card: requests, dollars charged and the names.
        assert page.text_content("#kpi-unpriced") == "1"
        assert page.text_content("#kpi-unpriced-note") == "$0.45 charged · tg-mystery"
        assert "warn" in (page.locator(".kpi").filter(has=page.locator("#kpi-unpriced"))
                          .get_attribute("class") or "")  # fmt: skip

        # Live: a new unpriced model, and more of the known one, no reload.
        record(
            api,
            key,
            [
                event("enigma-1", cost=None, model="tg-enigma", usage=BIG, team="ads"),
                event("enigma-2", cost=None, model="tg-enigma", usage=BIG, team="ads"),
                event("mystery-2", cost=None, model="tg-mystery"),  # $0.00045
            ],
        )
        page.wait_for_function(
            "() => document.getElementById('kpi-unpriced').textContent === '4'", timeout=5000
        )
        # Costliest first: tg-enigma $0.90, tg-mystery $0.45045.
        assert page.text_content("#kpi-unpriced-note") == "$1.35 charged · tg-enigma, tg-mystery"
        assert page.locator("tr[data-event-id='enigma-2'] .badge.unpriced").count() == 1
        assert len(data_requests) == 1, "the live events came over the websocket"

        # The next summary agrees with what the page added up.
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        assert page.text_content("#kpi-unpriced") == "4"
        assert page.text_content("#kpi-unpriced-note") == "$1.35 charged · tg-enigma, tg-mystery"
        assert page.locator("#alerts li[data-kind='unpriced_model']").count() == 2
        assert errors == []
        browser.close()
