"""The containers tab in a real browser (Debian's Chromium, Playwright) against a real enrolled
exporter and a real dockerd: an operator stops and starts a container (after the step-up
dialog once the password is old) and reads its live logs and details; a viewer sees no buttons
and the reason why. Hostile log lines and labels stay text.

Screenshots in test-artifacts/ (docker-*.png)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.command_fixtures import PASSWORD, CommandRig, EnrollServer
from tests.conftest import require
from tests.dockerd import Dockerd
from tests.web.test_docker_web import docker_state, say

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
HOSTILE = '<img src=x onerror="document.title=1">'

pytestmark = pytest.mark.e2e


async def wait_docker(dockerd: Dockerd, name: str, running: bool) -> None:
    for _ in range(100):
        if (await asyncio.to_thread(docker_state, dockerd, name))["Running"] is running:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} running={not running} still")


async def login(page: Any, base: str, username: str) -> None:
    await page.goto(base + "/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/")


async def test_an_operator_stops_and_starts_a_container_and_follows_its_logs_a_viewer_cannot(
    command_rig: CommandRig,
    enrolled_server: EnrollServer,
    dockerd: Dockerd,
    artifacts_dir: Path,
) -> None:
    require(shutil.which(CHROMIUM) is not None, "Debian's chromium is not installed")
    from playwright.async_api import async_playwright

    name = f"shop-{uuid.uuid4().hex[:6]}"
    script = (
        f"echo 'booted {HOSTILE}'; echo 'warning: cache cold' >&2; n=0; "
        "while :; do if [ -f /tmp/go-$n ]; then cat /tmp/go-$n; n=$((n+1)); fi; sleep 0.1; done"
    )
    container = dockerd.run("sh", "-c", script, name=name, labels={"note": HOSTILE})
    idle = dockerd.run(name=f"idle-{uuid.uuid4().hex[:6]}")
    try:
        box = await enrolled_server("docker", **{"docker.host": dockerd.url})
        await command_rig.grant("olga", box.server_id)
        await command_rig.grant("vic", box.server_id)
        web = await command_rig.start_web()
        base = web.origin
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                context = await browser.new_context(
                    viewport={"width": 1280, "height": 900},
                    extra_http_headers={"Accept-Language": "en"},
                )
                page = await context.new_page()
                errors: list[str] = []
                confirms: list[str] = []

                async def accept(dialog: Any) -> None:
                    confirms.append(dialog.message)
                    await dialog.accept()

                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("dialog", lambda d: asyncio.ensure_future(accept(d)))
                await login(page, base, "olga")
                await page.goto(f"{base}/servers/{box.server_id}")
                await page.click("button[data-tab=containers]")
                row = page.locator(f"#containers tr[data-name='{name}']")
                await row.locator(".docker-state", has_text="running").wait_for()
                assert await page.locator("#docker-hint").is_hidden()
                await page.screenshot(path=str(artifacts_dir / "docker-tab.png"), full_page=True)

                # Stop: confirm, a pending state, then the state dockerd reports.
                await row.locator("button[data-action=stop]").click()
                # sh as PID 1 ignores SIGTERM: dockerd waits its 10 s, the row says so meanwhile.
                await row.locator(".docker-state .pending", has_text="stopping").wait_for()
                assert await row.locator("button[data-action=stop]").is_disabled()
                await page.screenshot(
                    path=str(artifacts_dir / "docker-stopping.png"), full_page=True
                )
                await row.locator(".docker-state", has_text="exited").wait_for(timeout=30000)
                await wait_docker(dockerd, name, False)
                assert confirms[-1].startswith(f"Stop container {name}?")
                status = await page.inner_text("#docker-status")
                assert status == f"{name}: Stop done, now exited."
                assert await row.locator("button[data-action=start]").count() == 1
                await page.screenshot(
                    path=str(artifacts_dir / "docker-stopped.png"), full_page=True
                )

                # Start needs a recent step-up (as file changes do): the dialog asks, a wrong
                # password is said so, cancelling changes nothing, the right one starts it.
                await command_rig.age_step_up("olga")
                step_up = page.locator("#step-up")
                await row.locator("button[data-action=start]").click()
                await step_up.wait_for()
                await page.fill("#step-up input[name=password]", "wrong password")
                await page.click("#step-up-ok")
                await page.locator("#step-up-error").filter(has_text="Wrong password").wait_for()
                await page.screenshot(path=str(artifacts_dir / "docker-step-up.png"))
                await page.click("#step-up-cancel")
                await page.locator(
                    "#docker-status", has_text="re-authentication was cancelled"
                ).wait_for()
                assert not await step_up.is_visible()
                assert (await asyncio.to_thread(docker_state, dockerd, name))["Running"] is False
                await row.locator("button[data-action=start]").click()
                await step_up.wait_for()
                await page.fill("#step-up input[name=password]", PASSWORD)
                await page.click("#step-up-ok")
                await row.locator(".docker-state", has_text="running").wait_for(timeout=30000)
                await wait_docker(dockerd, name, True)
                assert not await step_up.is_visible()
                assert confirms[-1].startswith(f"Start container {name}?")

                # Logs: what it printed (hostile text as text), then new lines as they come.
                await row.locator("button", has_text="Logs").click()
                log = page.locator("#docker-log")
                await log.locator("text=warning: cache cold").first.wait_for()
                assert f"booted {HOSTILE}" in await log.inner_text()
                assert await log.locator("img").count() == 0
                assert await log.locator(".stderr").first.inner_text() == "warning: cache cold\n"
                await asyncio.to_thread(say, dockerd, name, 0, "order 1001 paid")
                await log.locator("text=order 1001 paid").wait_for()
                # Pause holds new lines back; resume shows them.
                await page.click("#docker-pause")
                await asyncio.to_thread(say, dockerd, name, 1, "order 1002 paid")
                await page.locator("#docker-log-state", has_text="1 new lines held").wait_for()
                assert "order 1002" not in await log.inner_text()
                await page.click("#docker-pause")
                await log.locator("text=order 1002 paid").wait_for()
                await page.screenshot(path=str(artifacts_dir / "docker-logs.png"), full_page=True)

                # Details: inspect facts and live stats, the hostile label as text.
                await page.click("#docker-panel button[data-view=details]")
                await page.locator("#docker-info dd", has_text=container.id).wait_for()
                labels = page.locator("#docker-info dd", has_text="note=")
                assert await labels.inner_text() == f"note={HOSTILE}"
                await page.locator("#docker-info [data-stat=memory]", has_text="B").wait_for()
                await page.locator("#docker-info [data-stat=cpu]", has_text="%").wait_for()
                await page.screenshot(
                    path=str(artifacts_dir / "docker-details.png"), full_page=True
                )
                assert await page.title() != "1"
                assert errors == []

                # A phone: the table scrolls inside its box, the page does not.
                await page.set_viewport_size({"width": 390, "height": 844})
                await page.screenshot(path=str(artifacts_dir / "docker-phone.png"), full_page=True)
                assert await page.evaluate(
                    "() => document.documentElement.scrollWidth <= window.innerWidth + 1"
                )
                await page.set_viewport_size({"width": 1280, "height": 900})

                # The same tab in Chinese.
                await page.click("form.lang button[value=zh-CN]")
                await page.click("button[data-tab=containers]")
                await row.locator("button[data-action=stop]", has_text="停止").wait_for()
                await page.screenshot(path=str(artifacts_dir / "docker-tab-zh.png"), full_page=True)

                # A viewer: no buttons, and a hint that says why.
                viewer = await browser.new_context(
                    viewport={"width": 1280, "height": 700},
                    extra_http_headers={"Accept-Language": "en"},
                )
                vpage = await viewer.new_page()
                await login(vpage, base, "vic")
                await vpage.goto(f"{base}/servers/{box.server_id}")
                await vpage.click("button[data-tab=containers]")
                hint = vpage.locator("#docker-hint")
                await hint.wait_for()
                assert "operator role" in await hint.inner_text()
                assert await vpage.locator("#containers button[data-action]").count() == 0
                assert await vpage.locator("th.docker-actions-col").is_hidden()
                await vpage.screenshot(
                    path=str(artifacts_dir / "docker-viewer.png"), full_page=True
                )
            finally:
                await browser.close()
        assert (await asyncio.to_thread(docker_state, dockerd, idle.name))["Running"] is True
    finally:
        for made in (container, idle):
            with contextlib.suppress(Exception):
                made.remove(force=True)
