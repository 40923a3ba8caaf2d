"""The API reference page (/docs/api/): Swagger UI, vendored and pinned,
renders GET /v1/openapi.json in a real headless Chromium under the pages'
Content-Security-Policy, loading nothing from anywhere else."""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.system.test_browser import CHROMIUM, CHROMIUM_ARGS, require_browser

VENDOR = (
    Path(__file__).resolve().parent.parent.parent / "dashboard/static/dashboard/vendor/swagger-ui"
)


def test_the_vendored_files_are_the_pinned_release():
    listed = re.findall(r"^([0-9a-f]{64})  (\S+)$", (VENDOR / "README.md").read_text(), re.M)

    assert {name for _, name in listed} == {p.name for p in VENDOR.iterdir()} - {"README.md"}
    for digest, name in listed:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (VENDOR / "LICENSE").read_text()


def test_the_page_and_its_files_are_served_without_a_sign_in(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        page = client.get("/docs/api/")
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        answers = {asset: client.get(asset) for asset in assets}

    assert page.status_code == 200
    assert "Content-Security-Policy" in page.headers
    assert 'data-url="/v1/openapi.json"' in page.text
    assert {a.rsplit("/", 1)[1] for a in assets} >= {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "api_docs.js",
    }
    for asset, answer in answers.items():
        assert answer.status_code == 200, asset


def test_the_page_renders_every_operation_in_chromium(server, transactional_db):
    require_browser()
    with ThreadPoolExecutor(1) as pool:
        titles, errors, hosts = pool.submit(_render, server.url).result()

    assert not errors, errors
    assert hosts == {urlsplit(server.url).netloc}  # nothing from a CDN or elsewhere
    for title in (
        "Renew a hold's expiry (long and streamed calls)",
        "Hold the estimate on every budget that applies, atomically",
        "Record LLM requests (one event, or a batch of up to 1000)",
        "The organization's audit log, newest first (admin keys)",
    ):
        assert title in titles


def _render(base: str) -> tuple[set[str], list[str], set[str]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        page = browser.new_page()
        errors: list[str] = []
        hosts: set[str] = set()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.on("request", lambda r: hosts.add(urlsplit(r.url).netloc))
        page.goto(f"{base}/docs/api/")
        page.wait_for_selector(".opblock-summary-description", timeout=20_000)
        titles = set(page.locator(".opblock-summary-description").all_inner_texts())
        browser.close()
    hosts.discard("")  # data: URLs
    return titles, errors, hosts
