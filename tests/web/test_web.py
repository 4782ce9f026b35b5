"""The real web app (create_app) on a real server, a real database and a real head."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from vpsmon.collector import accounts
from vpsmon.collector.config import load_config
from vpsmon.collector.head import Head
from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.web import auth
from vpsmon.web.app import create_app

USERNAME = "alice"
PASSWORD = "correct horse battery"
HOSTILE = "<img src=x onerror=alert(1)>"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Site:
    client: TestClient
    pool: asyncpg.Pool
    head: Head

    @property
    def port(self) -> int:
        port = self.client.port
        assert port is not None
        return port

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.port}"

    async def login_form_token(self, **headers: str) -> str:
        resp = await self.client.get("/login", headers=headers)
        assert resp.status == 200
        match = CSRF_FIELD.search(await resp.text())
        assert match, "the login form carries a CSRF token"
        return match.group(1)

    async def post_login(self, username: str, password: str) -> aiohttp.ClientResponse:
        token = await self.login_form_token()
        return await self.client.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": token},
            allow_redirects=False,
        )

    async def login(self) -> aiohttp.ClientResponse:
        resp = await self.post_login(USERNAME, PASSWORD)
        assert resp.status == 302, await resp.text()
        assert resp.headers["Location"] == "/"
        return resp

    async def session_csrf_token(self) -> str:
        resp = await self.client.get("/")
        assert resp.status == 200
        match = CSRF_FIELD.search(await resp.text())
        assert match, "pages of a logged-in user carry the session's CSRF token"
        return match.group(1)

    async def session_count(self) -> int:
        count: int = await self.pool.fetchval("SELECT count(*) FROM sessions")
        return count


@pytest.fixture
async def site(pool: asyncpg.Pool) -> AsyncIterator[Site]:
    await accounts.create_user(pool, USERNAME, PASSWORD, "admin")
    head = Head()
    app = create_app(load_config(None, env={}), pool, head)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Site(client, pool, head)


async def add_server(pool: asyncpg.Pool, name: str, url: str) -> int:
    server_id: int = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ($1, $2) RETURNING id", name, url
    )
    return server_id


async def test_the_overview_redirects_to_login_when_logged_out(site: Site) -> None:
    resp = await site.client.get("/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/login"


async def test_the_api_answers_401_json_when_logged_out(site: Site) -> None:
    resp = await site.client.get("/api/servers", allow_redirects=False)
    assert resp.status == 401
    assert resp.content_type == "application/json"
    assert await resp.json() == {"error": "login required"}


async def test_a_login_with_the_forms_token_sets_an_httponly_samesite_session_cookie(
    site: Site,
) -> None:
    resp = await site.login()
    cookies = [c for c in resp.headers.getall("Set-Cookie") if c.startswith(auth.SESSION_COOKIE)]
    assert len(cookies) == 1
    attributes = [a.strip().lower() for a in cookies[0].split(";")]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert await site.session_count() == 1

    resp = await site.client.get("/api/servers")
    assert resp.status == 200
    assert await resp.json() == {"servers": []}
    page = await site.client.get("/")
    assert page.status == 200
    assert USERNAME in await page.text()


async def test_the_login_csrf_cookie_is_httponly_and_strict(site: Site) -> None:
    resp = await site.client.get("/login")
    cookie = next(
        c for c in resp.headers.getall("Set-Cookie") if c.startswith(auth.LOGIN_CSRF_COOKIE)
    )
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attributes
    assert "samesite=strict" in attributes


async def test_a_login_without_the_login_csrf_token_is_refused(site: Site) -> None:
    # No form token at all (a cross-site form post):
    resp = await site.client.post(
        "/login", data={"username": USERNAME, "password": PASSWORD}, allow_redirects=False
    )
    assert resp.status == 403
    assert auth.SESSION_COOKIE not in resp.cookies
    # A token that does not match the cookie our page set:
    await site.login_form_token()
    resp = await site.client.post(
        "/login",
        data={"username": USERNAME, "password": PASSWORD, "csrf_token": "forged"},
        allow_redirects=False,
    )
    assert resp.status == 403
    assert await site.session_count() == 0
    assert (await site.client.get("/api/servers")).status == 401


async def test_a_login_with_a_token_but_without_its_cookie_is_refused(site: Site) -> None:
    token = await site.login_form_token()
    site.client.session.cookie_jar.clear()
    resp = await site.client.post(
        "/login",
        data={"username": USERNAME, "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
    )
    assert resp.status == 403
    assert await site.session_count() == 0


async def test_a_wrong_password_is_401_and_ten_failures_lock_out_even_the_right_one(
    site: Site,
) -> None:
    for _ in range(10):
        resp = await site.post_login(USERNAME, "wrong password")
        assert resp.status == 401
        assert "Wrong username or password." in await resp.text()
    resp = await site.post_login(USERNAME, PASSWORD)
    assert resp.status == 429
    assert "Too many failed attempts" in await resp.text()
    assert await site.session_count() == 0
    assert (await site.client.get("/api/servers")).status == 401


async def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(site: Site) -> None:
    resp = await site.post_login("mallory", "wrong password")
    assert resp.status == 401
    assert "Wrong username or password." in await resp.text()


async def test_logout_without_the_csrf_token_is_refused_and_keeps_the_session(
    site: Site,
) -> None:
    await site.login()
    resp = await site.client.post("/logout", data={}, allow_redirects=False)
    assert resp.status == 403
    resp = await site.client.post(
        "/logout", data={"csrf_token": "not-the-token"}, allow_redirects=False
    )
    assert resp.status == 403
    assert (await site.client.get("/api/servers")).status == 200
    assert await site.session_count() == 1


async def test_logout_with_the_csrf_token_ends_the_session(site: Site) -> None:
    await site.login()
    token = await site.session_csrf_token()
    resp = await site.client.post("/logout", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/login"
    assert await site.session_count() == 0
    assert (await site.client.get("/api/servers")).status == 401


async def test_the_csrf_token_may_come_in_a_header(site: Site) -> None:
    await site.login()
    token = await site.session_csrf_token()
    resp = await site.client.post("/logout", headers={"X-CSRF-Token": token}, allow_redirects=False)
    assert resp.status == 302
    assert await site.session_count() == 0


async def test_the_live_socket_refuses_a_foreign_origin(site: Site) -> None:
    await site.login()
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await site.client.ws_connect("/api/live", headers={"Origin": "http://evil.example"})
    assert caught.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        # same host, other port: another origin
        other = f"http://{site.client.host}:{site.port + 1}"
        await site.client.ws_connect("/api/live", headers={"Origin": other})
    assert caught.value.status == 403


async def test_the_live_socket_needs_a_session(site: Site) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await site.client.ws_connect("/api/live", headers={"Origin": site.origin})
    assert caught.value.status == 401


async def test_the_live_socket_sends_a_snapshot_then_each_scrape_of_a_server(
    site: Site, pool: asyncpg.Pool
) -> None:
    server_id = await add_server(pool, "web-1", "http://10.0.0.5:9190/metrics")
    await site.login()
    ws = await site.client.ws_connect("/api/live", headers={"Origin": site.origin})
    try:
        first = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
        assert first["type"] == "snapshot"
        assert [s["name"] for s in first["servers"]] == ["web-1"]
        assert first["servers"][0]["id"] == server_id
        assert first["servers"][0]["live"]["online"] is False

        target = Target(server_id, "web-1", "http://10.0.0.5:9190/metrics", 15.0, 10.0)
        now = time.time()
        await site.head.append(
            ScrapeResult(
                target,
                now,
                0.01,
                [
                    Sample("node_load1", (), 0.75),
                    Sample("node_memory_MemTotal_bytes", (), 4e9),
                    Sample("node_memory_MemAvailable_bytes", (), 1e9),
                ],
            )
        )
        update = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
        assert update["type"] == "server"
        assert update["server"]["id"] == server_id
        assert update["server"]["online"] is True
        assert update["server"]["load1"] == 0.75
        assert update["server"]["memory_used"] == 3e9
        assert update["server"]["last_seen"] == now

        await site.head.append(ScrapeResult(target, now + 15, 0.01, [], "timed out after 10s"))
        down = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
        assert down["server"]["online"] is False
        assert down["server"]["error"] == "timed out after 10s"
    finally:
        await ws.close()

    # The REST view agrees with what the socket sent.
    servers = (await (await site.client.get("/api/servers")).json())["servers"]
    assert servers[0]["live"]["error"] == "timed out after 10s"
    assert servers[0]["live"]["load1"] == 0.75


async def test_a_hostile_server_name_is_data_in_json_and_escaped_in_html(
    site: Site, pool: asyncpg.Pool
) -> None:
    server_id = await add_server(pool, HOSTILE, "http://10.0.0.6:9190/metrics")
    await site.login()

    resp = await site.client.get("/api/servers")
    assert resp.content_type == "application/json"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    servers = (await resp.json())["servers"]
    assert [(s["id"], s["name"]) for s in servers] == [(server_id, HOSTILE)]

    ws = await site.client.ws_connect("/api/live", headers={"Origin": site.origin})
    try:
        snapshot = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
    finally:
        await ws.close()
    assert snapshot["servers"][0]["name"] == HOSTILE

    for path in ("/", "/login"):
        page = await (await site.client.get(path)).text()
        assert "<img src=x" not in page, path
        assert "onerror=alert(1)>" not in page, path
        assert "<img" not in page, path
    site.client.session.cookie_jar.clear()
    page = await (await site.client.get("/login")).text()
    assert "<img" not in page


async def test_pages_and_the_api_send_security_headers(site: Site) -> None:
    def check(resp: aiohttp.ClientResponse) -> None:
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"

    check(await site.client.get("/login"))
    # Raised answers (redirects, 401, 404) carry them as well.
    check(await site.client.get("/", allow_redirects=False))
    check(await site.client.get("/api/servers"))
    check(await site.client.get("/no-such-page"))
    await site.login()
    check(await site.client.get("/"))
    check(await site.client.get("/api/servers"))
    check(await site.client.get("/healthz"))


async def test_the_overview_has_no_inline_script(site: Site) -> None:
    await site.login()
    page = await (await site.client.get("/")).text()
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S)
    assert scripts, "the overview loads its module"
    assert all(body.strip() == "" for body in scripts)
    assert 'type="module"' in page


async def test_choosing_chinese_sets_the_lang_cookie_and_translates_the_login_page(
    site: Site,
) -> None:
    english = await (await site.client.get("/login")).text()
    assert "Sign in" in english
    assert "登录" not in english

    resp = await site.client.post("/lang", data={"lang": "zh-CN"}, allow_redirects=False)
    assert resp.status == 302
    cookie = next(c for c in resp.headers.getall("Set-Cookie") if c.startswith("lang="))
    assert cookie.startswith("lang=zh-CN")

    page = await (await site.client.get("/login")).text()
    assert "登录" in page
    assert '<html lang="zh-CN">' in page
    assert "Sign in" not in page


async def test_an_unknown_language_is_refused(site: Site) -> None:
    resp = await site.client.post("/lang", data={"lang": "xx"}, allow_redirects=False)
    assert resp.status == 400
    assert "lang" not in {c.key for c in site.client.session.cookie_jar}


async def test_the_language_switch_only_redirects_within_the_site(site: Site) -> None:
    resp = await site.client.post(
        "/lang",
        data={"lang": "en"},
        headers={"Referer": "http://evil.example//evil.example/path"},
        allow_redirects=False,
    )
    assert resp.status == 302
    assert resp.headers["Location"] == "/"


async def test_changing_language_while_logged_in_needs_the_csrf_token(site: Site) -> None:
    await site.login()
    resp = await site.client.post("/lang", data={"lang": "zh-CN"}, allow_redirects=False)
    assert resp.status == 403
    token = await site.session_csrf_token()
    resp = await site.client.post(
        "/lang", data={"lang": "zh-CN", "csrf_token": token}, allow_redirects=False
    )
    assert resp.status == 302


async def test_the_browsers_accept_language_picks_chinese(site: Site) -> None:
    resp = await site.client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    page = await resp.text()
    assert "登录" in page
    assert '<html lang="zh-CN">' in page
    resp = await site.client.get("/login", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert "Sign in" in await resp.text()


async def test_the_lang_cookie_wins_over_accept_language(site: Site) -> None:
    await site.client.post("/lang", data={"lang": "en"}, allow_redirects=False)
    resp = await site.client.get("/login", headers={"Accept-Language": "zh-CN"})
    assert "Sign in" in await resp.text()


async def test_healthz_answers_without_a_session(site: Site) -> None:
    resp = await site.client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"
