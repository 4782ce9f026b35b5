"""The overview in a real browser (Debian's Chromium driven by Playwright): login, live values
changing without a reload, the table view and Chinese. Screenshots go to test-artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e.procs import Slice

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "browser-password-1"
NAME = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.e2e


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[str]:
    running = Slice(tmp_path, database_url, NAME, PASSWORD)
    try:
        yield running.base
    finally:
        running.stop()


def test_overview_shows_live_values_that_change_without_reload(
    site: str, artifacts_dir: Path
) -> None:
    require(shutil.which(CHROMIUM) is not None, "Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(
            viewport={"width": 1280, "height": 720},
            locale="en-US",
            extra_http_headers={"Accept-Language": "en"},
        )
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(site + "/")
        assert page.url.endswith("/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(site + "/")
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))

        card = page.locator("article.server").first
        page.wait_for_function(
            "() => document.querySelector('#live-status').classList.contains('on')"
        )
        # The hostile name is shown as text, never as an element.
        assert card.locator("h2.name").inner_text() == NAME
        assert page.locator("main img").count() == 0
        cpu = card.locator(".meter").first.locator(".meter-value")
        page.wait_for_function(
            "() => /%$/.test(document.querySelector('article.server .meter-value').textContent)"
        )
        assert "%" in cpu.inner_text()
        assert "/" in card.locator(".meter").nth(1).locator(".meter-value").inner_text()
        page.screenshot(path=str(artifacts_dir / "overview-cards.png"), full_page=True)
        # Values move on while the page stays: count changes of the CPU figure.
        updates = page.evaluate("""() => new Promise((resolve) => {
            let n = 0;
            const target = document.querySelector('article.server .meter-value');
            const obs = new MutationObserver(() => {
                if (++n >= 2) { obs.disconnect(); resolve(n); }
            });
            obs.observe(target, {childList: true, characterData: true, subtree: true});
            setTimeout(() => resolve(n), 15000);
        })""")
        assert updates >= 2, "the CPU value did not change over the WebSocket"
        assert navigations == [], "the page reloaded"

        page.click("#view-table")
        row = page.locator("table.servers tbody tr").first
        assert row.locator("td").first.inner_text() == NAME
        page.screenshot(path=str(artifacts_dir / "overview-table.png"), full_page=True)

        page.click("button[value=zh-CN]")
        page.wait_for_selector("text=服务器")
        page.click("#view-cards")
        page.wait_for_function(
            "() => document.querySelector('#live-status').classList.contains('on')"
        )
        page.screenshot(path=str(artifacts_dir / "overview-zh.png"), full_page=True)

        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.context.add_cookies(page.context.cookies())
        phone.goto(site + "/")
        phone.wait_for_function(
            "() => document.querySelector('#live-status').classList.contains('on')"
        )
        phone.screenshot(path=str(artifacts_dir / "overview-phone.png"), full_page=True)
        assert dialogs == [], "a script ran from a server name"
        browser.close()
