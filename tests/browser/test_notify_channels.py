"""The channels page in a real browser: an admin adds a webhook channel, previews its message,
saves it and presses "Send test"; the local webhook receives it. Screenshots in
test-artifacts/ (English, Chinese, phone width)."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import require
from tests.notify.receiver import Receiver
from vpsmon.collector import accounts
from vpsmon.collector.config import load_config
from vpsmon.collector.head import Head
from vpsmon.web.app import create_app
from vpsmon.web.notify import NOTIFY

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "browser-password-1"

pytestmark = pytest.mark.e2e


async def test_admin_adds_a_webhook_channel_and_send_test_delivers_it(
    pool: asyncpg.Pool, artifacts_dir: Path
) -> None:
    require(shutil.which(CHROMIUM) is not None, "Debian's chromium is not installed")
    from playwright.async_api import async_playwright

    await accounts.create_user(pool, "admin", PASSWORD, "admin")
    config = load_config(None, env={"VPSMON_NOTIFY_ALLOWED_HOSTS": "127.0.0.1"})
    async with (
        Receiver() as hook,
        TestServer(create_app(config, pool, Head()), host="127.0.0.1") as server,
        async_playwright() as pw,
    ):
        base = str(server.make_url("")).rstrip("/")
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = await browser.new_page(
                viewport={"width": 1280, "height": 800},
                extra_http_headers={"Accept-Language": "en"},
            )
            await page.goto(base + "/login")
            await page.fill("input[name=username]", "admin")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(base + "/")
            await page.click("text=Alerts")
            await page.click("nav.notify-tabs >> text=Channels")
            await page.select_option("select[name=kind]", "webhook")
            await page.click("text=Add channel")
            await page.fill("input[name=name]", "ops-webhook")
            await page.fill("input[name=s_url]", hook.url + "/alerts")
            await page.fill(
                "input[name=title_template]", "{{ status|upper }}: {{ alerts|length }} alert(s)"
            )
            await page.click("button[value=preview]")
            assert await page.inner_text(".preview-title") == "FIRING: 2 alert(s)"
            await page.screenshot(
                path=str(artifacts_dir / "notify-channel-form.png"), full_page=True
            )
            await page.click("button[value=save]")
            await page.wait_for_url(base + "/notify/channels")
            row = page.locator("tr[data-channel=ops-webhook]")
            await row.locator("text=Send test").click()
            banner = page.locator("#test-result")
            assert "HTTP 200" in await banner.inner_text()
            assert "Test message sent to ops-webhook" in await banner.inner_text()
            assert len(hook.requests) == 1 and hook.requests[0].path == "/alerts"
            assert hook.requests[0].body["alerts"][0]["labels"]["alertname"] == "VpsmonTest"
            await page.screenshot(path=str(artifacts_dir / "notify-channels.png"), full_page=True)

            # Alerts from the notify function show up with their state and a silence shortcut.
            await server.app[NOTIFY].submit(
                [
                    {
                        "labels": {
                            "alertname": "HighLoad",
                            "instance": "web-1:9190",
                            "severity": "warning",
                        },
                        "annotations": {"summary": "Load above 4 for 5 minutes"},
                    },
                    {
                        "labels": {
                            "alertname": "ServerDown",
                            "instance": "db-1:9190",
                            "severity": "critical",
                        },
                        "annotations": {"summary": "Server db-1 is offline"},
                    },
                ]
            )
            await page.goto(base + "/notify/alerts")
            assert await page.locator("table.notify-table").first.locator("tbody tr").count() == 2
            await page.locator("tr:has-text('HighLoad') >> a.button").first.click()
            assert "HighLoad" in await page.input_value("input[name=matchers]")
            await page.fill("input[name=comment]", "deploying")
            await page.click("text=Create silence")
            await page.wait_for_url(base + "/notify/silences")
            await page.goto(base + "/notify/alerts")
            assert "silenced" in await page.locator("tr:has-text('HighLoad')").first.inner_text()
            await page.screenshot(path=str(artifacts_dir / "notify-alerts.png"), full_page=True)

            await page.click("button[value=zh-CN]")
            await page.goto(base + "/notify/channels")
            assert await page.locator("h1.page-title").inner_text() == "通知渠道"
            await page.screenshot(
                path=str(artifacts_dir / "notify-channels-zh.png"), full_page=True
            )
            await page.set_viewport_size({"width": 390, "height": 800})
            await page.goto(base + "/notify/log")
            await page.screenshot(path=str(artifacts_dir / "notify-log-phone.png"), full_page=True)
            assert "ops-webhook" in await page.inner_text("main")
        finally:
            await browser.close()
