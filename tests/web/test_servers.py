"""Server records over the JSON API and the HTML form: validation, CSRF, roles, escaping."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from vpsmon.collector import access as grants
from vpsmon.collector import accounts
from vpsmon.collector.config import load_config
from vpsmon.collector.head import Head
from vpsmon.web.app import create_app

HOSTILE = "<img src=x onerror=alert(1)>"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery"


@dataclass
class Browser:
    client: TestClient
    csrf: str

    async def api(self, method: str, path: str, body: Any = None, csrf: bool = True) -> Any:
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        resp = await self.client.request(method, path, json=body, headers=headers)
        return resp.status, (await resp.json() if resp.content_type == "application/json" else None)


async def login(client: TestClient, username: str) -> Browser:
    page = await client.get("/login")
    token = CSRF_FIELD.search(await page.text())
    assert token
    resp = await client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert resp.status == 302
    home = await client.get("/")
    csrf = CSRF_FIELD.search(await home.text())
    assert csrf
    return Browser(client, csrf.group(1))


@pytest.fixture
async def app_server(pool: asyncpg.Pool) -> AsyncIterator[TestServer]:
    await accounts.create_user(pool, "root", PASSWORD, "admin")
    await accounts.create_user(pool, "watcher", PASSWORD, "viewer")
    app = create_app(load_config(None, env={}), pool, Head())
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


@pytest.fixture
async def admin(app_server: TestServer) -> AsyncIterator[Browser]:
    async with TestClient(app_server) as client:
        yield await login(client, "root")


@pytest.fixture
async def viewer(app_server: TestServer) -> AsyncIterator[Browser]:
    async with TestClient(app_server) as client:
        yield await login(client, "watcher")


FULL = {
    "name": "tokyo-1",
    "address": "203.0.113.7",
    "scheme": "https",
    "metrics_port": 9100,
    "metrics_path": "/metrics",
    "command_port": 9191,
    "group": "asia",
    "tags": ["prod", "cn2"],
    "labels": {"env": "prod"},
    "provider": "Example VPS",
    "country_code": "jp",
    "region": "Tokyo",
    "purchase_url": "https://example.com/vps/1",
    "price": "4.99",
    "currency": "usd",
    "billing_cycle": "monthly",
    "expires_on": "2027-01-31",
    "notes": "backup box",
    "route": "CN2 GIA",
    "public": True,
    "traffic_quota_bytes": 1024**4,
    "traffic_reset_day": 15,
    "traffic_mode": "max",
}


async def test_an_admin_adds_a_server_with_every_detail_and_reads_it_back(
    admin: Browser, pool: asyncpg.Pool
) -> None:
    status, body = await admin.api("POST", "/api/servers", FULL)
    assert status == 201, body
    server = body["server"]
    assert server["url"] == "https://203.0.113.7:9100/metrics"
    assert server["country_code"] == "JP" and server["currency"] == "USD"
    assert server["tags"] == ["prod", "cn2"] and server["labels"] == {"env": "prod"}
    assert server["price"] == "4.99" and server["expires_on"] == "2027-01-31"
    assert server["traffic_quota_bytes"] == 1024**4 and server["traffic_mode"] == "max"
    status, again = await admin.api("GET", f"/api/servers/{server['id']}")
    assert status == 200 and again["server"] == server
    # The scrape loop reads the URL from the same row.
    assert await pool.fetchval("SELECT url FROM servers") == "https://203.0.113.7:9100/metrics"
    listed = (await admin.api("GET", "/api/servers"))[1]["servers"]
    assert listed[0]["live"]["traffic"]["quota"] == 1024**4


async def test_bad_fields_are_all_reported_and_nothing_is_stored(
    admin: Browser, pool: asyncpg.Pool
) -> None:
    bad = {
        "name": "",
        "address": "http://x/",
        "metrics_port": 70000,
        "purchase_url": "javascript:alert(1)",
        "price": "-1",
        "currency": "dollars",
        "country_code": "Japan",
        "billing_cycle": "weekly",
        "expires_on": "31/01/2027",
        "labels": {"__name__": "x"},
        "traffic_mode": "both",
        "surprise": 1,
    }
    status, body = await admin.api("POST", "/api/servers", bad)
    assert status == 400
    assert set(body["fields"]) == {
        "name",
        "address",
        "metrics_port",
        "purchase_url",
        "price",
        "currency",
        "country_code",
        "billing_cycle",
        "expires_on",
        "labels",
        "traffic_mode",
        "surprise",
    }
    assert body["fields"]["purchase_url"] == "Only http:// and https:// links."
    assert body["fields"]["metrics_port"] == "A whole number from 1 to 65535."
    assert await pool.fetchval("SELECT count(*) FROM servers") == 0
    status, body = await admin.api("POST", "/api/servers", [1, 2])
    assert status == 400 and body == {"error": "expected a JSON object"}


async def test_a_second_server_on_the_same_address_is_refused(admin: Browser) -> None:
    assert (await admin.api("POST", "/api/servers", {"name": "a", "address": "10.1.1.1"}))[0] == 201
    status, body = await admin.api("POST", "/api/servers", {"name": "b", "address": "10.1.1.1"})
    assert status == 400
    assert "address" in body["fields"]


async def test_patch_changes_only_the_given_fields_put_replaces_and_delete_removes(
    admin: Browser, pool: asyncpg.Pool
) -> None:
    created = (await admin.api("POST", "/api/servers", FULL))[1]["server"]
    path = f"/api/servers/{created['id']}"
    status, body = await admin.api("PATCH", path, {"notes": "moved", "tags": ["x"]})
    assert status == 200, body
    assert body["server"]["notes"] == "moved" and body["server"]["tags"] == ["x"]
    assert body["server"]["provider"] == "Example VPS"
    status, body = await admin.api("PUT", path, {"name": "bare", "address": "2001:db8::1"})
    assert status == 200
    assert body["server"]["provider"] == "" and body["server"]["public"] is False
    assert body["server"]["url"] == "http://[2001:db8::1]:9190/metrics"
    status, body = await admin.api("PATCH", path, {"price": "abc"})
    assert status == 400
    assert (await admin.api("GET", path))[1]["server"]["name"] == "bare"
    assert (await admin.api("DELETE", path))[0] == 200
    assert (await admin.api("GET", path))[0] == 404
    assert await pool.fetchval("SELECT count(*) FROM servers") == 0


async def test_state_changes_without_the_csrf_token_are_refused(
    admin: Browser, pool: asyncpg.Pool
) -> None:
    status, _ = await admin.api("POST", "/api/servers", FULL, csrf=False)
    assert status == 403
    created = (await admin.api("POST", "/api/servers", FULL))[1]["server"]
    path = f"/api/servers/{created['id']}"
    assert (await admin.api("DELETE", path, csrf=False))[0] == 403
    assert (await admin.api("PATCH", path, {"name": "x"}, csrf=False))[0] == 403
    resp = await admin.client.post(
        f"/servers/{created['id']}/delete", data={}, allow_redirects=False
    )
    assert resp.status == 403
    assert await pool.fetchval("SELECT name FROM servers") == "tokyo-1"


async def test_a_viewer_reads_but_cannot_add_change_or_delete(
    admin: Browser, viewer: Browser, pool: asyncpg.Pool
) -> None:
    created = (await admin.api("POST", "/api/servers", FULL))[1]["server"]
    path = f"/api/servers/{created['id']}"
    assert (await viewer.api("GET", path))[0] == 404, "not granted: as if it did not exist"
    watcher = await accounts.find_user(pool, "watcher")
    await grants.grant_server(pool, watcher.id, created["id"])
    assert (await viewer.api("GET", path))[0] == 200
    assert (await viewer.api("POST", "/api/servers", {**FULL, "address": "10.9.9.9"}))[0] == 403
    assert (await viewer.api("PATCH", path, {"name": "mine"}))[0] == 403
    assert (await viewer.api("DELETE", path))[0] == 403
    for page in ("/servers/new", f"/servers/{created['id']}/edit"):
        assert (await viewer.client.get(page)).status == 403
    resp = await viewer.client.post(
        f"/servers/{created['id']}/delete", data={"csrf_token": viewer.csrf}, allow_redirects=False
    )
    assert resp.status == 403
    assert await pool.fetchval("SELECT count(*) FROM servers") == 1
    # The detail page has no edit link for a viewer.
    page = await (await viewer.client.get(f"/servers/{created['id']}")).text()
    assert f"/servers/{created['id']}/edit" not in page


async def test_the_form_adds_a_server_and_shows_errors_next_to_the_fields(
    admin: Browser, pool: asyncpg.Pool
) -> None:
    form = {
        "csrf_token": admin.csrf,
        "name": HOSTILE,
        "address": "not a host!",
        "tags": "a, b",
        "labels": "env=prod\nbroken",
        "traffic_quota_gib": "500",
    }
    resp = await admin.client.post("/servers/new", data=form, allow_redirects=False)
    assert resp.status == 400
    page = await resp.text()
    assert "A host name, IPv4 or IPv6 address" in page
    assert "Line 2: write name=value." in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert await pool.fetchval("SELECT count(*) FROM servers") == 0

    form.update(address="vps1.example.com", labels="env=prod")
    resp = await admin.client.post("/servers/new", data=form, allow_redirects=False)
    assert resp.status == 302
    server_id = int(resp.headers["Location"].rsplit("/", 1)[1])
    row = await pool.fetchrow("SELECT * FROM servers WHERE id = $1", server_id)
    assert row["name"] == HOSTILE and row["tags"] == ["a", "b"]
    assert row["traffic_quota_bytes"] == 500 * 2**30

    for path in (f"/servers/{server_id}", f"/servers/{server_id}/edit", "/"):
        page = await (await admin.client.get(path)).text()
        assert "<img" not in page, path
        assert "&lt;img src=x onerror=alert(1)&gt;" in page, path


async def test_the_form_in_chinese_shows_chinese_errors(admin: Browser) -> None:
    admin.client.session.cookie_jar.update_cookies({"lang": "zh-CN"})
    resp = await admin.client.post(
        "/servers/new", data={"csrf_token": admin.csrf, "name": "", "address": "1.2.3.4"}
    )
    assert resp.status == 400
    assert "必填。" in await resp.text()


async def test_an_unknown_server_is_404_everywhere(admin: Browser) -> None:
    for path in ("/servers/999", "/servers/999/edit", "/api/servers/999", "/servers/99999999999"):
        assert (await admin.client.get(path)).status == 404, path
    assert (await admin.api("DELETE", "/api/servers/999"))[0] == 404


async def test_record_changes_are_audited_with_who_what_and_which_server(
    admin: Browser, pool: asyncpg.Pool
) -> None:
    created = (await admin.api("POST", "/api/servers", FULL))[1]["server"]
    path = f"/api/servers/{created['id']}"
    await admin.api("PATCH", path, {"notes": "moved"})
    await admin.api("DELETE", path)
    rows = await pool.fetch(
        "SELECT username, action, server_name, detail FROM audit_log"
        " WHERE action LIKE 'server.%' ORDER BY id"
    )
    assert [(r["username"], r["action"], r["server_name"]) for r in rows] == [
        ("root", "server.create", "tokyo-1"),
        ("root", "server.update", "tokyo-1"),
        ("root", "server.delete", "tokyo-1"),
    ]
    assert json.loads(rows[1]["detail"])["changed"] == {"notes": ["backup box", "moved"]}


async def test_a_script_with_an_admins_api_token_manages_servers_without_csrf(
    app_server: TestServer, pool: asyncpg.Pool
) -> None:
    from vpsmon.collector.tokens import create_token

    root = await pool.fetchval("SELECT id FROM users WHERE username = 'root'")
    watcher = await pool.fetchval("SELECT id FROM users WHERE username = 'watcher'")
    _, admin_token = await create_token(pool, root, "deploy")
    _, viewer_token = await create_token(pool, watcher, "read")
    async with TestClient(app_server) as client:
        resp = await client.post(
            "/api/servers",
            json={"name": "scripted", "address": "10.2.2.2"},
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        assert resp.status == 201, await resp.text()
        resp = await client.post(
            "/api/servers",
            json={"name": "nope", "address": "10.2.2.3"},
            headers={"Authorization": f"Bearer {viewer_token}"},
        )
        assert resp.status == 403
    assert await pool.fetchval("SELECT array_agg(name) FROM servers") == ["scripted"]
