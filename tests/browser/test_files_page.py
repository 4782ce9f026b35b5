"""The file manager in a real browser (Debian's Chromium, Playwright) on the real web app and a
real enrolled exporter (issue #7): an operator uploads a file (progress bar), downloads it back,
edits a text file, makes, renames, chmods and deletes a folder, is refused outside the roots,
and sees a hostile file name as text. Screenshots in test-artifacts/ (files-*.png, en and
zh-CN)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.command_fixtures import PASSWORD, CommandRig, EnrollServer
from tests.conftest import require

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
HOSTILE = "<img src=x onerror=alert(1)>.txt"

pytestmark = pytest.mark.e2e


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def login(page: Any, base: str, username: str) -> None:
    await page.goto(base + "/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + "/")


async def test_an_operator_uploads_downloads_and_edits_files_in_the_browser(
    command_rig: CommandRig, enrolled_server: EnrollServer, artifacts_dir: Path, tmp_path: Path
) -> None:
    require(shutil.which(CHROMIUM) is not None, "Debian's chromium is not installed")
    from playwright.async_api import async_playwright

    box = await enrolled_server("files", name="web-1")
    await command_rig.grant("olga", box.server_id)
    (box.files / "nginx.conf").write_text("server {\n    listen 80;\n}\n")
    (box.files / HOSTILE).write_text("not a tag")
    (box.files / "logs").mkdir()
    (box.files / "tool.bin").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00")
    for path in (box.files / "nginx.conf", box.files / HOSTILE, box.files / "logs"):
        os.chown(path, box.files.stat().st_uid, box.files.stat().st_gid)
    upload = tmp_path / "upload" / "backup-备份.tar"
    upload.parent.mkdir()
    upload.write_bytes(os.urandom(6 * 1024 * 1024))
    too_big = tmp_path / "upload" / "too-big.iso"
    too_big.write_bytes(b"\0" * (9 * 1024 * 1024))
    command_rig.config = dataclasses.replace(command_rig.config, upload_max_bytes=8 * 1024 * 1024)
    web = await command_rig.start_web()
    base = web.origin
    alerts: list[str] = []
    errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": 1280, "height": 860},
                locale="en-US",
                extra_http_headers={"Accept-Language": "en"},
                accept_downloads=True,
            )
            page = await context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
            await login(page, base, "olga")

            # From the server's page to its files.
            await page.goto(f"{base}/servers/{box.server_id}")
            await page.click("#open-files")
            await page.wait_for_url(f"{base}/servers/{box.server_id}/files")
            await page.wait_for_selector("tr[data-name='nginx.conf']")
            assert await page.locator("#path-crumbs .crumb.current").inner_text() == str(box.files)
            assert await page.inner_text("#run-as") == "as user nobody"

            # The hostile name is text: no <img> in the table, no alert.
            hostile = page.locator("tr[data-type=file]").filter(has_text="onerror")
            assert await hostile.locator(".entry-name").inner_text() == HOSTILE
            assert await page.locator("#files img").count() == 0

            # Upload with a progress bar; the file arrives intact.
            await page.set_input_files("#upload-input", str(upload))
            done = page.locator(".transfer.ok").filter(has_text="Uploading backup-备份.tar")
            await done.wait_for()
            assert "uploaded, 6.0 MiB" in await done.inner_text()
            await page.wait_for_selector(f"tr[data-name='{upload.name}']")
            assert sha256(box.files / upload.name) == sha256(upload)
            await page.screenshot(path=str(artifacts_dir / "files-list.png"), full_page=True)

            # Download it back (fetch with progress, then saved by the browser).
            row = page.locator(f"tr[data-name='{upload.name}']")
            async with page.expect_download() as downloading:
                await row.locator("button.download").click()
            download = await downloading.value
            assert download.suggested_filename == upload.name
            saved = tmp_path / "downloaded.tar"
            await download.save_as(str(saved))
            assert sha256(saved) == sha256(upload)
            await page.locator(".transfer.ok").filter(has_text="Downloading").wait_for()

            # Edit a text file and save it.
            await page.locator("tr[data-name='nginx.conf'] button.edit").click()
            editor = page.locator("#editor-text")
            await editor.wait_for()
            assert await editor.input_value() == "server {\n    listen 80;\n}\n"
            await editor.fill("server {\n    listen 8080;\n}\n")
            await page.click("#editor-save")
            await page.locator("#editor-state").filter(has_text="Saved").wait_for()
            assert (box.files / "nginx.conf").read_text() == "server {\n    listen 8080;\n}\n"
            await page.screenshot(path=str(artifacts_dir / "files-editor.png"))
            await page.click("#editor-close")

            # New folder, permissions, rename, delete (with its confirmation).
            await page.click("#mkdir")
            await page.fill("#ask-input", "releases")
            await page.click("#ask-ok")
            await page.wait_for_selector("tr[data-name='releases']")
            await page.locator("tr[data-name='releases'] button.chmod").click()
            await page.locator("#ask-mode input[data-bit='16']").check()  # group write (0o020)
            assert await page.input_value("#ask-input") == "0775"
            await page.screenshot(path=str(artifacts_dir / "files-chmod.png"))
            await page.click("#ask-ok")
            await page.locator("tr[data-name='releases']").filter(has_text="rwxrwxr-x").wait_for()
            assert (box.files / "releases").stat().st_mode & 0o777 == 0o775
            await page.locator("tr[data-name='releases'] button.rename").click()
            await page.fill("#ask-input", "old-releases")
            await page.click("#ask-ok")
            await page.wait_for_selector("tr[data-name='old-releases']")
            await page.locator("tr[data-name='old-releases'] button.delete").click()
            assert "Delete old-releases?" in await page.inner_text("#ask-title")
            await page.click("#ask-ok")
            await page.locator("tr[data-name='old-releases']").wait_for(state="detached")
            assert not (box.files / "old-releases").exists()

            # The upload limit is shown, and a larger file is refused before it is sent.
            assert await page.inner_text("#upload-limit") == "Uploads up to 8.0 MiB."
            await page.set_input_files("#upload-input", str(too_big))
            refused = page.locator(".transfer.failed").filter(has_text="too-big.iso")
            await refused.wait_for()
            assert "accepts uploads up to 8.0 MiB" in await refused.inner_text()
            assert not (box.files / too_big.name).exists()

            # Changes need a recent step-up: the dialog asks, a wrong password is said so, the
            # right one lets the change go on; browsing does not ask.
            await command_rig.age_step_up("olga")
            await page.click("#refresh")
            await page.click("#mkdir")
            await page.fill("#ask-input", "after-step-up")
            await page.click("#ask-ok")
            step_up = page.locator("#step-up")
            await step_up.wait_for()
            await page.fill("#step-up input[name=password]", "wrong password")
            await page.click("#step-up-ok")
            await page.locator("#step-up-error").filter(has_text="Wrong password").wait_for()
            await page.screenshot(path=str(artifacts_dir / "files-step-up.png"))
            assert not (box.files / "after-step-up").exists()
            await page.fill("#step-up input[name=password]", PASSWORD)
            await page.click("#step-up-ok")
            await page.wait_for_selector("tr[data-name='after-step-up']")
            assert not await step_up.is_visible()
            # Cancelled: nothing changes and the page says why.
            await command_rig.age_step_up("olga")
            await page.locator("tr[data-name='after-step-up'] button.delete").click()
            await page.click("#ask-ok")
            await step_up.wait_for()
            await page.click("#step-up-cancel")
            await (
                page.locator("#error").filter(has_text="re-authentication was cancelled").wait_for()
            )
            assert (box.files / "after-step-up").is_dir()

            # Into a folder and back by the breadcrumb.
            await page.locator("tr[data-name='logs'] button.entry-name").click()
            await page.wait_for_selector("#empty:not([hidden])")
            await page.locator("#path-crumbs .crumb").first.click()
            await page.wait_for_selector("tr[data-name='nginx.conf']")

            # Outside the roots: the exporter's refusal, said plainly.
            await page.fill("#goto-path", "/etc")
            await page.click("#goto button[type=submit]")
            error = page.locator("#error")
            await error.wait_for()
            assert "outside the folders its exporter allows" in await error.inner_text()
            await page.screenshot(path=str(artifacts_dir / "files-refused.png"), full_page=True)

            # The same page in Chinese.
            zh = await browser.new_context(
                viewport={"width": 1280, "height": 860},
                locale="zh-CN",
                extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"},
            )
            zh_page = await zh.new_page()
            zh_page.on("pageerror", lambda e: errors.append(str(e)))
            zh_page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
            await login(zh_page, base, "olga")
            await zh_page.goto(f"{base}/servers/{box.server_id}/files")
            await zh_page.wait_for_selector("tr[data-name='nginx.conf']")
            assert await zh_page.inner_text("h1") == "文件 · web-1"
            assert "上传" in await zh_page.inner_text(".upload-button")
            await zh_page.screenshot(path=str(artifacts_dir / "files-list-zh.png"), full_page=True)
            await zh_page.locator(f"tr[data-name='{upload.name}'] button.delete").click()
            assert f"删除 {upload.name}" in await zh_page.inner_text("#ask-title")
            await zh_page.screenshot(path=str(artifacts_dir / "files-delete-zh.png"))
            await zh_page.click("#ask-cancel")
            assert (box.files / upload.name).exists()
            # A binary file is not opened in the editor, and the page says why in Chinese.
            await zh_page.locator("tr[data-name='tool.bin'] button.edit").click()
            zh_error = zh_page.locator("#error")
            await zh_error.wait_for()
            assert "不是文本文件" in await zh_error.inner_text()
            assert "not UTF-8 text" in await zh_error.inner_text()  # the exact reason kept
            assert not await zh_page.locator("#editor").is_visible()
            await zh_page.screenshot(
                path=str(artifacts_dir / "files-binary-zh.png"), full_page=True
            )
        finally:
            await browser.close()
    assert errors == []
    assert alerts == []
