"""The dashboard in a real browser (Debian's Chromium driven by Playwright): add a server in
the form, watch it go live, a 24 h history chart, the edit form, the public status page,
Chinese and a phone, with a hostile server name that must stay text everywhere.

Screenshots go to test-artifacts/ (dashboard-*.png)."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import require
from tests.e2e.procs import Slice
from tests.web.samples import add_day_of_history
from vpsmon.collector.storage.maintenance import maintain

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "browser-password-2"
HOSTILE = "<img src=x onerror=alert(1)>"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.e2e


@pytest.fixture
def running(tmp_path: Path, database_url: str) -> Iterator[Slice]:
    site = Slice(tmp_path, database_url, HOSTILE, PASSWORD, {"VPSMON_STATUS_PAGE_ENABLED": "true"})
    try:
        yield site
    finally:
        site.stop()


def seed_history(database_url: str, name: str) -> None:
    """A day of samples for the server called ``name``, ending before the live ones start."""

    async def run() -> None:
        conn_pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            server_id = await conn_pool.fetchval("SELECT id FROM servers WHERE name = $1", name)
            await add_day_of_history(conn_pool, server_id, time.time() - 300, interval=60.0)
            # Rows of closed hours arrive as late rows, as a backfill would: let the storage
            # merge them into chunks and rollups now rather than over the next minutes.
            while True:
                report = await maintain(conn_pool, time.time())
                if report.skipped:  # the collector's own maintenance step is running
                    await asyncio.sleep(0.2)
                elif not report.late_merged:
                    break
        finally:
            await conn_pool.close()

    asyncio.run(run())


def no_horizontal_scroll(page: Any) -> bool:
    return bool(
        page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    )


def test_add_a_server_watch_it_live_read_a_day_of_history_in_english_and_chinese(
    running: Slice, database_url: str, artifacts_dir: Path
) -> None:
    require(shutil.which(CHROMIUM) is not None, "Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    site = running.base
    seed_history(database_url, HOSTILE)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(
            viewport={"width": 1360, "height": 860},
            locale="en-US",
            extra_http_headers={"Accept-Language": "en"},
        )
        page = context.new_page()
        dialogs: list[str] = []
        errors: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site + "/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(site + "/")

        # Add a server through the form: the same exporter under another name.
        page.click("#add-server")
        page.wait_for_url(site + "/servers/new")
        page.fill("input[name=name]", "tokyo-1")
        page.fill("input[name=address]", "nowhere at all")
        page.fill("input[name=metrics_port]", str(running.exporter_port))
        page.click("button[type=submit].primary")
        assert (
            page.locator(".field.invalid .field-error").first.inner_text().startswith("A host name")
        )
        page.screenshot(path=str(artifacts_dir / "dashboard-form-error.png"), full_page=True)
        page.fill("input[name=address]", "localhost")
        page.fill("input[name=tags]", "prod, asia")
        page.fill("input[name=group]", "Asia")
        page.fill("input[name=country_code]", "JP")
        page.fill("input[name=region]", "Tokyo")
        page.fill("input[name=route]", "CN2 GIA")
        page.fill("input[name=price]", "4.99")
        page.fill("input[name=currency]", "USD")
        page.select_option("select[name=billing_cycle]", "monthly")
        page.fill("input[name=expires_on]", "2030-01-31")
        page.fill("input[name=traffic_quota_gib]", "1000")
        page.check("input[name=public]")
        page.click("button[type=submit].primary")
        page.wait_for_url(site + "/servers/*")
        assert page.locator("#d-name").inner_text() == "tokyo-1"
        # Live charts fill from the WebSocket while we look.
        page.wait_for_function(
            "() => document.querySelector('#live-status').classList.contains('on')"
        )
        page.wait_for_selector(".chart[data-chart=cpu] canvas", timeout=30000)

        # The overview lists both, live, with the new one's flag, region and tags.
        page.goto(site + "/")
        page.wait_for_function(
            "() => document.querySelectorAll('article.server').length === 2"
            " && [...document.querySelectorAll('article.server .meter-value')]"
            ".some((e) => /%$/.test(e.textContent))"
        )
        names = page.locator("article.server h2.name").all_text_contents()
        assert sorted(names) == sorted([HOSTILE, "tokyo-1"])
        tokyo = page.locator("article.server", has_text="tokyo-1")
        assert tokyo.locator(".flag").inner_text() == "JP"
        assert "Tokyo" in tokyo.locator(".sub").inner_text()
        assert tokyo.locator(".chip.tag").all_inner_texts() == ["prod", "asia"]
        tokyo.locator(".meter.traffic").wait_for()
        assert "1000 GiB" in tokyo.locator(".meter.traffic .meter-value").inner_text()
        # A live value changes without a reload.
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        changes = page.evaluate("""() => new Promise((resolve) => {
            let n = 0;
            const target = document.querySelector('article.server .f-net');
            const seen = new Set([target.textContent]);
            const obs = new MutationObserver(() => {
                seen.add(target.textContent);
                if (++n >= 3) { obs.disconnect(); resolve(n); }
            });
            obs.observe(target, {childList: true, characterData: true, subtree: true});
            setTimeout(() => resolve(n), 15000);
        })""")
        assert changes >= 3 and navigations == []
        # Filter by tag, then search; both remembered across a reload.
        page.click(".tag-filter button:has-text('prod')")
        assert page.locator("article.server:visible").count() == 1
        page.click(".tag-filter button:has-text('prod')")
        page.fill("#search", "tokyo")
        page.reload()
        assert page.input_value("#search") == "tokyo"
        # The server-rendered cards are replaced by the live ones, filtered as remembered.
        page.wait_for_function(
            "() => [...document.querySelectorAll('article.server')].filter((e) => !e.hidden)"
            ".map((e) => e.querySelector('h2').textContent).join() === 'tokyo-1'"
        )
        page.fill("#search", "")
        page.select_option("#sort", "name")
        page.wait_for_timeout(300)
        page.screenshot(path=str(artifacts_dir / "dashboard-overview.png"), full_page=True)
        page.click("#view-table")
        page.screenshot(path=str(artifacts_dir / "dashboard-overview-table.png"), full_page=True)
        page.click("#view-cards")

        # The hostile server: its detail page with a day of history.
        page.locator("article.server", has_text="onerror").locator("a.name-link").click()
        page.wait_for_url(site + "/servers/*")
        assert page.locator("#d-name").inner_text() == HOSTILE
        page.click("#ranges button[data-range='24h']")
        page.wait_for_function(
            "() => document.querySelectorAll('.chart canvas').length >= 5"
            " && document.querySelector('#load-state').textContent === ''"
        )
        titles = page.locator(".chart h2").all_inner_texts()
        assert titles[:4] == [
            "CPU by mode",
            "Memory and swap",
            "Load average",
            "Network per interface",
        ]
        # Live and stored samples of the same interface are one line, not two.
        net_names = page.locator(".chart[data-chart=net] .u-legend th").all_inner_texts()[1:]
        assert sorted(n.strip() for n in net_names) == ["eth0 ↑", "eth0 ↓"], net_names
        # The CPU chart's legend follows the cursor: hover the middle of the plot.
        box = page.locator(".chart[data-chart=cpu] .u-over").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function(
            "() => /%$/.test(document.querySelectorAll("
            "'.chart[data-chart=cpu] .u-legend .u-value')[1].textContent)"
        )
        page.screenshot(path=str(artifacts_dir / "dashboard-detail-24h.png"), full_page=True)
        # Drag to zoom: the selected hours are loaded at a finer step.
        with page.expect_response(lambda r: "/history?start=" in r.url) as zoomed:
            page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + 40)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + 40, steps=5)
            page.mouse.up()
        assert zoomed.value.json()["step"] < 120
        page.wait_for_selector("#reset-zoom:visible")
        page.click(".tab[data-tab=host]")
        assert page.locator("#host-info [data-k=os]").inner_text() != "–"
        page.click(".tab[data-tab=containers]")
        page.wait_for_selector("#containers-empty:visible, #containers:visible")
        assert page.locator("main img").count() == 0

        # The edit form shows the hostile name as a value; make it public.
        page.goto(page.url.split("#")[0] + "/edit")
        assert page.input_value("input[name=name]") == HOSTILE
        assert page.locator("main img").count() == 0
        page.check("input[name=public]")
        page.click("button[type=submit].primary")
        page.wait_for_url(site + "/servers/*")

        # Chinese, on the detail page. The charts' axes are drawn on canvas: record the text
        # drawn, to read the time axis' labels.
        page.add_init_script(
            "window.__drawn = []; const fill = CanvasRenderingContext2D.prototype.fillText;"
            " CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {"
            " window.__drawn.push(String(text)); return fill.call(this, text, ...rest); };"
        )
        page.click("button[value=zh-CN]")
        page.wait_for_selector("text=图表")
        page.click("#ranges button[data-range='24h']")
        page.wait_for_function(
            "() => document.querySelectorAll('.chart canvas').length >= 5"
            " && document.querySelector('#load-state').textContent === ''"
        )
        assert "CPU（按模式）" in page.locator(".chart h2").all_inner_texts()
        drawn = page.evaluate("() => window.__drawn")
        # Dates on the time axis in Chinese (11月22日), hours on a 24 h clock; no English
        # month or am/pm, which uPlot draws by default.
        assert any(re.fullmatch(r"\d{2}:\d{2}(\n\d{1,2}月\d{1,2}日)?", t) for t in drawn), drawn
        assert any("月" in t for t in drawn), drawn
        english = re.compile(r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\b|\d(am|pm)\b")
        assert not [t for t in drawn if english.search(t)], drawn
        box = page.locator(".chart[data-chart=cpu] .u-over").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        legend_time = page.locator(".chart[data-chart=cpu] .u-legend .u-value").first
        page.wait_for_function("(e) => /年/.test(e.textContent)", arg=legend_time.element_handle())
        page.screenshot(path=str(artifacts_dir / "dashboard-detail-zh.png"), full_page=True)

        # Dark theme: the same page with the system in dark mode.
        page.emulate_media(color_scheme="dark")
        page.reload()
        page.click("#ranges button[data-range='24h']")
        page.wait_for_function(
            "() => document.querySelectorAll('.chart canvas').length >= 5"
            " && document.querySelector('#load-state').textContent === ''"
        )
        background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 19, 26)", background
        page.screenshot(path=str(artifacts_dir / "dashboard-detail-dark.png"), full_page=True)
        page.goto(site + "/")
        page.wait_for_function(
            "() => document.querySelectorAll('article.server .f-net').length === 2"
        )
        page.screenshot(path=str(artifacts_dir / "dashboard-overview-dark.png"), full_page=True)
        page.emulate_media(color_scheme="light")

        # The public status page, signed out: both servers, as text, no addresses.
        visitor = browser.new_context(viewport={"width": 1280, "height": 720}, locale="en-US")
        status = visitor.new_page()
        status.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        status.goto(site + "/status")
        status.wait_for_function("() => document.querySelector('#updated').textContent !== ''")
        assert sorted(status.locator("h2.name").all_text_contents()) == sorted([HOSTILE, "tokyo-1"])
        html = status.content()
        assert "127.0.0.1" not in html and "localhost" not in html
        assert status.locator("main img").count() == 0
        status.screenshot(path=str(artifacts_dir / "dashboard-status.png"), full_page=True)

        # A phone: one column, no sideways scrolling, on the overview and the detail page.
        phone = browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            locale="en-US",
        )
        phone.add_cookies(context.cookies())
        mobile = phone.new_page()
        mobile.goto(site + "/")
        mobile.wait_for_function(
            "() => document.querySelector('#live-status').classList.contains('on')"
        )
        assert no_horizontal_scroll(mobile)
        mobile.screenshot(path=str(artifacts_dir / "dashboard-phone-overview.png"))
        mobile.locator("article.server a.name-link").first.click()
        mobile.wait_for_selector(".chart canvas", timeout=30000)
        assert no_horizontal_scroll(mobile)
        mobile.screenshot(path=str(artifacts_dir / "dashboard-phone-detail.png"))

        assert dialogs == [], "a script ran from a server name"
        assert errors == [], errors
        browser.close()
