"""Accounts in a real browser (Debian's Chromium driven by Playwright), on real processes:
an admin creates a viewer and grants one server; the viewer sees only that server (page, API,
WebSocket), cannot edit anything, cannot change state without the CSRF token; an API token
works and stops working when revoked; TOTP enrolment; the audit log; Chinese; a phone.

Screenshots go to test-artifacts/ (accounts-*.png)."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import require
from tests.e2e.procs import Slice
from vpsmon.collector import totp

CHROMIUM = "/usr/bin/chromium"
ADMIN_PASSWORD = "browser-admin-pw-3"
VIEWER_PASSWORD = "viewer password 9"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.e2e


@pytest.fixture
def running(tmp_path: Path, database_url: str) -> Iterator[Slice]:
    site = Slice(tmp_path, database_url, "granted-box", ADMIN_PASSWORD)
    try:
        yield site
    finally:
        site.stop()


def add_hidden_server(database_url: str) -> int:
    """A second server the viewer will not be granted (nothing listens at its address)."""

    async def run() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            server_id: int = await conn.fetchval(
                "INSERT INTO servers (name, url, group_name) VALUES"
                " ('secret-box', 'http://127.0.0.1:9/metrics', 'finance') RETURNING id"
            )
            return server_id
        finally:
            await conn.close()

    return asyncio.run(run())


def server_id(database_url: str, name: str) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            found: int = await conn.fetchval("SELECT id FROM servers WHERE name = $1", name)
            return found
        finally:
            await conn.close()

    return asyncio.run(run())


def test_admin_grants_one_server_and_the_viewer_sees_only_that_one(
    running: Slice, database_url: str, artifacts_dir: Path
) -> None:
    require(shutil.which(CHROMIUM) is not None, "Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    site = running.base
    hidden = add_hidden_server(database_url)
    granted = server_id(database_url, "granted-box")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        admin_ctx = browser.new_context(
            viewport={"width": 1280, "height": 800},
            locale="en-US",
            extra_http_headers={"Accept-Language": "en"},
        )
        admin = admin_ctx.new_page()
        errors: list[str] = []
        admin.on("pageerror", lambda e: errors.append(str(e)))
        admin.goto(site + "/login")
        admin.fill("input[name=username]", "admin")
        admin.fill("input[name=password]", ADMIN_PASSWORD)
        admin.click("button[type=submit]")
        admin.wait_for_url(site + "/")

        # Users → add a viewer.
        admin.click("nav >> text=Users")
        admin.wait_for_url(site + "/users")
        admin.fill("input[name=username]", "vic")
        admin.select_option("select[name=role]", "viewer")
        admin.fill("input[name=password]", VIEWER_PASSWORD)
        admin.click(".add-user button.primary")
        admin.wait_for_url(re.compile(r".*/users/\d+\?done=user_added"))
        assert "User added" in admin.locator(".notice").inner_text()
        # Grant exactly one server.
        admin.check(f"input[name=server][value='{granted}']")
        assert not admin.is_checked(f"input[name=server][value='{hidden}']")
        admin.click(".access-form button.primary")
        admin.wait_for_selector("text=Access saved.")
        admin.screenshot(path=str(artifacts_dir / "accounts-user-edit.png"), full_page=True)
        admin.goto(site + "/users")
        row = admin.locator("tr[data-user=vic]")
        assert "1 granted" in row.inner_text()
        assert "viewer" in row.inner_text()
        admin.screenshot(path=str(artifacts_dir / "accounts-users.png"), full_page=True)

        # The viewer, in a browser of their own.
        viewer_ctx = browser.new_context(
            viewport={"width": 1280, "height": 800},
            locale="en-US",
            extra_http_headers={"Accept-Language": "en"},
        )
        viewer = viewer_ctx.new_page()
        viewer.on("pageerror", lambda e: errors.append(str(e)))
        viewer.goto(site + "/login")
        viewer.fill("input[name=username]", "vic")
        viewer.fill("input[name=password]", VIEWER_PASSWORD)
        viewer.click("button[type=submit]")
        viewer.wait_for_url(site + "/")
        viewer.wait_for_function(
            "() => document.querySelector('#live-status').classList.contains('on')"
        )
        viewer.wait_for_function("() => document.querySelectorAll('article.server').length >= 1")
        # textContent: cards have content-visibility: auto, and a card whose visibility Chromium
        # has not laid out yet (a loaded machine) may give an empty innerText (seen once in CI).
        names = viewer.locator("article.server h2").all_text_contents()
        assert names == ["granted-box"], names
        assert "secret-box" not in viewer.content()
        assert viewer.locator("nav >> text=Users").count() == 0
        viewer.screenshot(path=str(artifacts_dir / "accounts-viewer-overview.png"), full_page=True)

        # By id in the URL and the API: as if it did not exist.
        resp = viewer.goto(f"{site}/servers/{hidden}")
        assert resp is not None and resp.status == 404
        resp = viewer.goto(f"{site}/servers/{granted}/edit")
        assert resp is not None and resp.status == 403
        viewer.goto(site + "/")
        api = viewer.evaluate(
            """async (ids) => {
                const out = {};
                for (const [k, path] of Object.entries(ids)) {
                    out[k] = (await fetch(path)).status;
                }
                return out;
            }""",
            {
                "hidden": f"/api/servers/{hidden}",
                "hidden_history": f"/api/servers/{hidden}/history?range=1h",
                "granted": f"/api/servers/{granted}",
                "users": "/api/users",
                "audit": "/api/audit",
            },
        )
        assert api == {
            "hidden": 404,
            "hidden_history": 404,
            "granted": 200,
            "users": 403,
            "audit": 403,
        }, api
        listed = viewer.evaluate(
            "async () => (await (await fetch('/api/servers')).json()).servers.map(s => s.name)"
        )
        assert listed == ["granted-box"]

        # The WebSocket: asking to watch the hidden server yields nothing about it.
        seen = viewer.evaluate(
            """(hidden) => new Promise((resolve) => {
                const ws = new WebSocket(`ws://${location.host}/api/live`);
                const ids = new Set();
                ws.onopen = () => ws.send(JSON.stringify({watch: hidden}));
                ws.onmessage = (ev) => {
                    const m = JSON.parse(ev.data);
                    if (m.type === 'snapshot') m.servers.forEach(s => ids.add(s.id));
                    if (m.type === 'server') ids.add(m.server.id);
                    if (m.type === 'point' || m.type === 'changed') ids.add(m.id);
                };
                setTimeout(() => { ws.close(); resolve([...ids]); }, 4000);
            })""",
            hidden,
        )
        assert hidden not in seen and granted in seen, seen

        # A viewer's state change is refused (403), with or without the CSRF token; a state
        # change without the CSRF token is refused for anyone.
        csrf = viewer.locator("input[name=csrf_token]").first.get_attribute("value")
        refused = viewer.evaluate(
            """async ([csrf, granted]) => {
                const json = {"Content-Type": "application/json"};
                const post = (path, headers, body) =>
                    fetch(path, {method: "POST", headers, body}).then(r => r.status);
                return {
                    create: await post("/api/servers", {...json, "X-CSRF-Token": csrf},
                                       JSON.stringify({name: "x", address: "10.1.1.1"})),
                    edit: await fetch(`/api/servers/${granted}`, {method: "PATCH",
                        headers: {...json, "X-CSRF-Token": csrf},
                        body: JSON.stringify({name: "mine"})}).then(r => r.status),
                    no_csrf_logout: await post("/logout", {}, null),
                    no_csrf_lang: await post("/lang", {"Content-Type":
                        "application/x-www-form-urlencoded"}, "lang=zh-CN"),
                };
            }""",
            [csrf, granted],
        )
        assert refused == {
            "create": 403,
            "edit": 403,
            "no_csrf_logout": 403,
            "no_csrf_lang": 403,
        }, refused
        assert viewer.evaluate("async () => (await fetch('/api/me')).status") == 200

        # An API token: created on the account page, shown once, works, then is revoked.
        viewer.goto(site + "/account")
        viewer.fill("#tokens input[name=name]", "script")
        viewer.click("#tokens button.primary")
        viewer.wait_for_selector("#new-token")
        secret = viewer.input_value("#new-token")
        assert secret.startswith("vpsmon_")
        viewer.screenshot(path=str(artifacts_dir / "accounts-token-created.png"), full_page=True)
        script = pw.request.new_context(
            base_url=site, extra_http_headers={"Authorization": f"Bearer {secret}"}
        )
        me = script.get("/api/me")
        assert me.status == 200 and me.json()["username"] == "vic"
        servers = script.get("/api/servers").json()["servers"]
        assert [s["name"] for s in servers] == ["granted-box"]
        assert script.get(f"/api/servers/{hidden}/history?range=1h").status == 404
        viewer.goto(site + "/account")
        viewer.click("#tokens button.danger")
        viewer.wait_for_selector("text=Token revoked.")
        assert script.get("/api/me").status == 401
        script.dispose()

        # Two-factor enrolment with a QR code.
        viewer.click("text=Set up two-factor authentication")
        viewer.wait_for_selector("img.qr")
        key = viewer.inner_text("#totp-secret").strip()
        viewer.screenshot(path=str(artifacts_dir / "accounts-totp-enrol.png"), full_page=True)
        viewer.fill("#totp input[name=code]", totp.totp(totp.decode_secret(key), time.time()))
        viewer.click("#totp button.primary")
        viewer.wait_for_selector("text=Two-factor authentication is on.")

        # Signing in again now takes the code after the password (the next step's code: the
        # one used to enrol is spent).
        viewer.click("header button.link")
        viewer.wait_for_url(site + "/login")
        viewer.fill("input[name=username]", "vic")
        viewer.fill("input[name=password]", VIEWER_PASSWORD)
        viewer.click("button[type=submit]")
        viewer.wait_for_url(site + "/login/totp")
        viewer.screenshot(path=str(artifacts_dir / "accounts-totp-login.png"), full_page=True)
        viewer.fill("input[name=code]", "000000")
        viewer.click("button[type=submit]")
        assert "wrong" in viewer.locator(".error").inner_text()
        viewer.fill("input[name=code]", totp.totp(totp.decode_secret(key), time.time() + 30))
        viewer.click("button[type=submit]")
        viewer.wait_for_url(site + "/")
        viewer.goto(site + "/account")

        # Phone-sized account page.
        phone = viewer_ctx.new_page()
        phone.set_viewport_size({"width": 390, "height": 844})
        phone.goto(site + "/")
        phone.click("a.who")  # the own account stays reachable on a phone
        phone.wait_for_url(site + "/account")
        phone.screenshot(path=str(artifacts_dir / "accounts-phone.png"), full_page=True)
        wide = phone.evaluate(
            """() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)"""
        )
        assert phone.evaluate(
            "() => document.documentElement.scrollWidth <= window.innerWidth + 1"
        ), f"the account page scrolls sideways on a phone: {wide}"

        # The admin reads it all in the audit log, then in Chinese.
        admin.goto(site + "/audit")
        log = admin.locator("table.audit tbody").inner_text()
        for action in (
            "login.success",
            "user.create",
            "user.grants",
            "token.create",
            "token.revoke",
            "totp.enable",
        ):
            assert action in log, action
        admin.select_option("select[name=action]", "token.")
        admin.click(".audit-filter button.primary")
        admin.wait_for_url(re.compile(r".*action=token\..*"))
        actions = admin.locator("table.audit tbody td:nth-child(3)").all_inner_texts()
        assert sorted(set(actions)) == ["token.create", "token.revoke"], actions
        admin.goto(site + "/audit")
        admin.screenshot(path=str(artifacts_dir / "accounts-audit.png"), full_page=True)
        admin.click("button[value=zh-CN]")
        admin.wait_for_selector("text=审计日志")
        admin.goto(site + "/users")
        admin.wait_for_selector("text=添加用户")
        admin.screenshot(path=str(artifacts_dir / "accounts-users-zh.png"), full_page=True)
        assert errors == [], errors
        browser.close()
