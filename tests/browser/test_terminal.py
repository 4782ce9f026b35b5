"""The web terminal in a real Chromium against a real enrolled exporter (issue #7): an operator
steps up, opens the terminal from the server's page, types `echo hello` and sees `hello`; tabs,
resize, copy and paste, the inline step-up dialog, the exit status; an admin replays the
session from the audit log. Screenshots (English, Chinese, playback) in test-artifacts/."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.command_fixtures import PASSWORD, CommandRig, EnrollServer
from tests.conftest import require

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.e2e


async def rows_text(page: object, pane: str = ".term-pane:not([hidden])") -> str:
    text: str = await page.inner_text(f"{pane} .xterm-rows")  # type: ignore[attr-defined]
    return text.replace("\u00a0", " ")


async def wait_rows(
    page: object, pattern: str, pane: str = ".term-pane:not([hidden])", count: int = 1
) -> str:
    """The visible terminal's text once `count` lines match `pattern` (a regex, multiline)."""
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        text = await rows_text(page, pane)
        if len(re.findall(pattern, text, re.MULTILINE)) >= count:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{pattern!r} never appeared in the terminal:\n{text}")


async def wait_state(page: object, state: str) -> None:
    await page.wait_for_function(  # type: ignore[attr-defined]
        "s => document.getElementById('term-state').textContent === s", arg=state, timeout=20000
    )


async def login(page: object, base: str, username: str) -> None:
    await page.goto(base + "/login")  # type: ignore[attr-defined]
    await page.fill("input[name=username]", username)  # type: ignore[attr-defined]
    await page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    await page.click("button[type=submit]")  # type: ignore[attr-defined]
    await page.wait_for_url(base + "/")  # type: ignore[attr-defined]


async def test_an_operator_types_echo_hello_in_the_web_terminal_and_an_admin_replays_it(
    command_rig: CommandRig, enrolled_server: EnrollServer, artifacts_dir: Path
) -> None:
    require(shutil.which(CHROMIUM) is not None, "Debian's chromium is not installed")
    from playwright.async_api import async_playwright

    box = await enrolled_server("pty", name="web-<b>1</b>")
    await command_rig.grant("olga", box.server_id)
    web = await command_rig.start_web()
    base = web.origin
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        page = await context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda err: problems.append(str(err)))
        page.on(
            "console",
            lambda m: problems.append(m.text) if m.type == "error" else None,
        )
        await login(page, base, "olga")

        # Step-up: the login was long enough ago that the terminal asks for the password.
        await command_rig.age_step_up("olga")
        await page.goto(f"{base}/servers/{box.server_id}")
        await page.click("[data-testid=open-terminal]")
        await page.wait_for_url(re.compile(r"/reauth\?next="))
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{base}/servers/{box.server_id}/terminal")
        assert "web-<b>1</b>" in await page.inner_text("h1")  # escaped, not markup

        await wait_state(page, "connected")
        await page.click(".term-pane:not([hidden])")
        await page.keyboard.type("echo hello\n")
        await wait_rows(page, r"^hello\s*$")
        assert "recording #" in await page.inner_text("#term-detail")

        # Resize: a smaller window gives the shell fewer rows and columns.
        await page.keyboard.type("stty size\n")
        before = re.findall(r"^(\d+) (\d+)\s*$", await wait_rows(page, r"^\d+ \d+\s*$"), re.M)
        await page.set_viewport_size({"width": 900, "height": 700})
        await page.wait_for_timeout(400)
        await page.keyboard.type("stty size\n")
        after = re.findall(
            r"^(\d+) (\d+)\s*$", await wait_rows(page, r"^\d+ \d+\s*$", count=2), re.M
        )
        assert int(after[-1][1]) < int(before[-1][1]) and int(after[-1][0]) < int(before[-1][0])
        await page.set_viewport_size({"width": 1280, "height": 860})

        # Copy with Ctrl+Shift+C from the selection, paste with Ctrl+Shift+V.
        await page.keyboard.type("echo copy-me-$((40+2))\n")
        await wait_rows(page, r"^copy-me-42\s*$")
        word = page.locator(
            ".term-pane:not([hidden]) .xterm-rows div", has_text=re.compile(r"^copy-me-42\s*$")
        )
        box = await word.last.bounding_box()
        assert box is not None
        # The row is under xterm's screen layer, which takes the mouse: click where it is.
        await page.mouse.dblclick(box["x"] + 20, box["y"] + box["height"] / 2)
        await page.keyboard.press("Control+Shift+C")
        assert await page.evaluate("navigator.clipboard.readText()") == "copy-me-42"
        await page.keyboard.type("echo pasted:")
        await page.keyboard.press("Control+Shift+V")
        await wait_rows(page, r"echo pasted:copy-me-42\s*$")  # the clipboard is read async
        await page.keyboard.press("Enter")
        await wait_rows(page, r"^pasted:copy-me-42\s*$")
        await page.screenshot(path=str(artifacts_dir / "terminal-en.png"), full_page=True)

        # A second tab is a second session; the first keeps its screen.
        await page.click("#term-new")
        await wait_state(page, "connected")
        assert await page.locator(".term-tab").count() == 2
        await page.click(".term-pane:not([hidden])")
        await page.keyboard.type("echo second-tab\n")
        await wait_rows(page, r"^second-tab\s*$")
        assert "copy-me" not in await rows_text(page)
        await page.click(".term-tab[data-n='1']")
        assert "copy-me-42" in await rows_text(page)

        # The step-up expired: a new tab asks inline, a wrong password is said so.
        await command_rig.age_step_up("olga")
        await page.click("#term-new")
        await page.wait_for_selector("#step-up[open]")
        await page.fill("#step-up input[name=password]", "wrong password")
        await page.click("#step-up button[type=submit]")
        await page.wait_for_selector("#step-up-error:not([hidden])")
        assert "Wrong password" in await page.inner_text("#step-up-error")
        await page.screenshot(path=str(artifacts_dir / "terminal-step-up-en.png"))
        await page.fill("#step-up input[name=password]", PASSWORD)
        await page.click("#step-up button[type=submit]")
        await wait_state(page, "connected")
        assert await page.locator(".term-tab").count() == 3

        # The shell exits: the status line says how, and links the recording.
        await page.click(".term-pane:not([hidden])")
        await page.keyboard.type("exit 7\n")
        await wait_state(page, "closed")
        assert "exit status 7" in await page.inner_text("#term-detail")
        assert await page.locator("#term-detail a[href^='/recordings/']").count() == 1

        await page.click("form.lang button[value=zh-CN]")
        await page.wait_for_load_state()
        await wait_state(page, "已连接")
        await page.click(".term-pane:not([hidden])")
        await page.keyboard.type("echo 你好 hello\n")
        await wait_rows(page, r"^你好 hello\s*$")
        assert "复制" in await page.inner_text(".term-status")
        await page.screenshot(path=str(artifacts_dir / "terminal-zh.png"), full_page=True)
        assert not [p for p in problems if "Content Security Policy" in p], problems

        # An admin finds the session in the audit log and replays it.
        admin = await browser.new_page(viewport={"width": 1280, "height": 860}, locale="en-US")
        await login(admin, base, "root")
        await admin.goto(f"{base}/audit?action=pty.open")
        plays = admin.locator("[data-testid=play]")
        assert await plays.count() == 4
        await admin.screenshot(path=str(artifacts_dir / "terminal-audit-en.png"), full_page=True)
        await plays.last.click()  # the oldest: the first session
        await admin.wait_for_url(re.compile(r"/recordings/\d+$"))
        await admin.select_option("#speed", "8")
        await admin.click("#play")
        await admin.wait_for_function(
            "() => document.getElementById('player-state').textContent === 'end of recording'",
            timeout=30000,
        )
        # xterm.js parses what it is given a moment later: wait for the screen, not the player.
        played = await wait_rows(admin, r"^pasted:copy-me-42\s*$", pane="#player")
        assert re.search(r"^hello\s*$", played, re.M), played
        await admin.screenshot(path=str(artifacts_dir / "terminal-playback-en.png"), full_page=True)
        await browser.close()
    # The step-up check and the wrong password answer 401 on purpose; nothing else may fail.
    assert not [p for p in problems if "status of 401" not in p], problems
