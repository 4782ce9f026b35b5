"""The add-server dialog in a real browser (Debian's Chromium, Playwright): an admin ticks
management features and gets the one-line enrol command with the collector's fingerprint; the
scrape settings are on the form; English and Chinese.

Screenshots in test-artifacts/ (enrol-*.png)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.command_fixtures import PASSWORD, CommandRig
from tests.conftest import require
from vpsmon.exporter.security import fingerprint

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
async def test_an_admin_adds_a_server_with_features_and_sees_the_enrol_command(
    command_rig: CommandRig, artifacts_dir: Path, lang: str
) -> None:
    require(shutil.which(CHROMIUM) is not None, "Debian's chromium is not installed")
    from playwright.async_api import async_playwright

    web = await command_rig.start_web()
    base = web.origin
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": 1280, "height": 1000},
                extra_http_headers={"Accept-Language": lang},
            )
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(base + "/login")
            await page.fill("input[name=username]", "root")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(base + "/")
            await page.goto(base + "/servers/new")
            await page.fill("input[name=name]", "<b>tokyo</b>")
            await page.fill("input[name=address]", "10.0.0.9")
            await page.fill("input[name=scrape_interval]", "30s")
            await page.check("input[name=feature][value=exec]")
            await page.check("input[name=feature][value=pty]")
            await page.fill("input[name=run_as]", "ops")
            await page.screenshot(
                path=str(artifacts_dir / f"enrol-form-{lang}.png"), full_page=True
            )
            await page.click("form.server-form button[type=submit].primary")
            command = await page.text_content("#command")
            assert command is not None
            assert command.startswith(f"curl -fsSL {base}/install-exporter.sh | sudo sh -s --")
            assert "-s -- --collector 127.0.0.1:8081" in command
            assert fingerprint(command_rig.identity.cert) in command
            assert "--features exec,pty --run-as ops" in command
            assert await page.text_content("h1") in {
                "Management of <b>tokyo</b>",
                "<b>tokyo</b> 的管理功能",
            }
            await page.screenshot(
                path=str(artifacts_dir / f"enrol-command-{lang}.png"), full_page=True
            )
            assert errors == []
        finally:
            await browser.close()
