"""Per-server access, API tokens, CSRF and step-up through the real web app (create_app)."""

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
from aiohttp import web
from aiohttp.test_utils import TestServer

from vpsmon.collector import access as grants
from vpsmon.collector import accounts, audit, tokens
from vpsmon.collector.config import load_config
from vpsmon.collector.head import Head
from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.web import access
from vpsmon.web.app import create_app
from vpsmon.web.keys import HUB, LIMITER

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


async def _server_probe(request: web.Request) -> web.Response:
    server_id = int(request.match_info["id"])
    await access.require_server(request, server_id)
    return web.json_response({"id": server_id})


async def _operator_change(request: web.Request) -> web.Response:
    user = access.require_role(request, "operator")
    return web.json_response({"changed_by": user.username})


async def _sensitive(request: web.Request) -> web.Response:
    user = await access.require_step_up(request)
    await access.audit(request, "exec", detail={"command": "uptime"})
    return web.json_response({"ran_for": user.username})


@dataclass
class Fleet:
    pool: asyncpg.Pool
    head: Head
    app: web.Application
    server: TestServer
    granted: int
    hidden: int
    viewer: accounts.User

    def client(self) -> aiohttp.ClientSession:
        """A browser of its own (own cookies) on the one running server."""
        return aiohttp.ClientSession(
            base_url=self.origin, cookie_jar=aiohttp.CookieJar(unsafe=True)
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


async def login(client: aiohttp.ClientSession, username: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token."""
    page = await (await client.get("/login")).text()
    match = CSRF_FIELD.search(page)
    assert match
    resp = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": match.group(1)},
        allow_redirects=False,
    )
    assert resp.status == 302, await resp.text()
    page = await (await client.get("/")).text()
    match = CSRF_FIELD.search(page)
    assert match
    return match.group(1)


@pytest.fixture
async def fleet(pool: asyncpg.Pool) -> AsyncIterator[Fleet]:
    await accounts.create_user(pool, "root", PASSWORD, "admin")
    viewer = await accounts.create_user(pool, "vic", PASSWORD, "viewer")
    await accounts.create_user(pool, "olga", PASSWORD, "operator")
    granted = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('granted-box', 'http://10.0.0.1:9190/metrics')"
        " RETURNING id"
    )
    hidden = await pool.fetchval(
        "INSERT INTO servers (name, url, group_name) VALUES"
        " ('secret-box', 'http://10.0.0.2:9190/metrics', 'secret') RETURNING id"
    )
    await grants.grant_server(pool, viewer.id, granted)
    head = Head()
    config = load_config(None, env={"VPSMON_WEB_REAUTH_TTL": "10m"})
    app = create_app(config, pool, head)
    app.router.add_get("/api/test/servers/{id}", _server_probe)
    app.router.add_post("/api/test/change", _operator_change)
    app.router.add_post("/api/test/sensitive", _sensitive)
    app[HUB].recheck_seconds = 0.2
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Fleet(pool, head, app, server, granted, hidden, viewer)
    finally:
        await server.close()


async def age_step_up(fleet: Fleet, username: str) -> None:
    """As if the user's last password entry were longer ago than web.reauth_ttl (10m)."""
    await fleet.pool.execute(
        "UPDATE sessions SET authenticated_at = now() - interval '11 minutes'"
        " WHERE user_id = (SELECT id FROM users WHERE username = $1)",
        username,
    )


def scrape(server_id: int, load: float) -> ScrapeResult:
    target = Target(server_id, "x", "http://x/metrics", 15.0, 10.0)
    return ScrapeResult(target, time.time(), 0.01, [Sample("node_load1", (), load)])


async def test_a_viewer_lists_only_the_servers_granted(fleet: Fleet) -> None:
    async with fleet.client() as client:
        await login(client, "vic")
        servers = (await (await client.get("/api/servers")).json())["servers"]
        assert [s["name"] for s in servers] == ["granted-box"]
        page = await (await client.get("/")).text()
        assert "granted-box" in page and "secret-box" not in page
    async with fleet.client() as client:
        await login(client, "root")
        servers = (await (await client.get("/api/servers")).json())["servers"]
        assert sorted(s["name"] for s in servers) == ["granted-box", "secret-box"]


async def test_a_server_not_granted_answers_404_like_one_that_does_not_exist(
    fleet: Fleet,
) -> None:
    async with fleet.client() as client:
        await login(client, "vic")
        ok = await client.get(f"/api/test/servers/{fleet.granted}")
        assert ok.status == 200
        hidden = await client.get(f"/api/test/servers/{fleet.hidden}")
        missing = await client.get("/api/test/servers/999999")
        assert hidden.status == missing.status == 404
        assert await hidden.json() == await missing.json() == {"error": "no such server"}


async def test_the_live_socket_carries_only_granted_servers_and_follows_grant_changes(
    fleet: Fleet,
) -> None:
    async with fleet.client() as client:
        await login(client, "vic")
        ws = await client.ws_connect("/api/live", headers={"Origin": fleet.origin})
        try:
            snapshot = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
            assert [s["id"] for s in snapshot["servers"]] == [fleet.granted]
            await fleet.head.append(scrape(fleet.hidden, 9.0))
            await fleet.head.append(scrape(fleet.granted, 1.0))
            update = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
            assert update["server"]["id"] == fleet.granted  # the hidden one never came

            # The group of the hidden server is granted: a new snapshot brings it.
            await grants.grant_group(fleet.pool, fleet.viewer.id, "secret")
            again = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
            assert again["type"] == "snapshot"
            assert sorted(s["id"] for s in again["servers"]) == sorted(
                [fleet.granted, fleet.hidden]
            )
            await fleet.head.append(scrape(fleet.hidden, 2.0))
            seen = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
            assert seen["server"]["id"] == fleet.hidden

            # Disabling the user closes the socket.
            await accounts.set_disabled(fleet.pool, fleet.viewer.id, True)
            closing = await asyncio.wait_for(ws.receive(), 5)
            assert closing.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}
        finally:
            await ws.close()


async def test_a_viewer_cannot_change_anything_and_an_operator_can(fleet: Fleet) -> None:
    async with fleet.client() as client:
        csrf = await login(client, "vic")
        resp = await client.post("/api/test/change", headers={"X-CSRF-Token": csrf})
        assert resp.status == 403
        assert await resp.json() == {"error": "forbidden: this needs the operator role"}
    async with fleet.client() as client:
        csrf = await login(client, "olga")
        resp = await client.post("/api/test/change", headers={"X-CSRF-Token": csrf})
        assert resp.status == 200


async def test_a_cookie_never_changes_state_without_the_csrf_token(fleet: Fleet) -> None:
    async with fleet.client() as client:
        await login(client, "olga")
        assert (await client.post("/api/test/change")).status == 403
        bad = await client.post("/api/test/change", headers={"X-CSRF-Token": "forged"})
        assert bad.status == 403


async def test_a_bearer_token_acts_as_its_user_without_csrf_until_revoked(fleet: Fleet) -> None:
    olga = await accounts.find_user(fleet.pool, "olga")
    token, secret = await tokens.create_token(fleet.pool, olga.id, "script")
    bearer = {"Authorization": f"Bearer {secret}"}
    async with fleet.client() as client:
        me = await (await client.get("/api/me", headers=bearer)).json()
        assert me == {
            "id": olga.id,
            "username": "olga",
            "role": "operator",
            "via_token": True,
            "servers": [],
        }
        assert (await client.get("/api/servers", headers=bearer)).status == 200
        resp = await client.post("/api/test/change", headers=bearer)
        assert resp.status == 200, "a bearer request needs no CSRF token"
        # A token is not a browser session: it cannot step up for sensitive actions.
        assert (await client.post("/api/test/sensitive", headers=bearer)).status == 403
        await tokens.revoke_token(fleet.pool, token.id)
        resp = await client.get("/api/me", headers=bearer)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_wrong_token_or_scheme_is_401_even_with_a_valid_cookie(fleet: Fleet) -> None:
    async with fleet.client() as client:
        await login(client, "root")
        for header in ("Bearer vpsmon_wrong_wrong_wrong_wrong", "Basic cm9vdDpwdw==", "Bearer"):
            resp = await client.get("/api/servers", headers={"Authorization": header})
            assert resp.status == 401, header
        assert (await client.get("/api/servers")).status == 200


async def test_a_viewers_token_sees_only_its_servers_and_cannot_change_anything(
    fleet: Fleet,
) -> None:
    _, secret = await tokens.create_token(fleet.pool, fleet.viewer.id, "ro")
    bearer = {"Authorization": f"Bearer {secret}"}
    async with fleet.client() as client:
        servers = (await (await client.get("/api/servers", headers=bearer)).json())["servers"]
        assert [s["id"] for s in servers] == [fleet.granted]
        assert (await client.get(f"/api/test/servers/{fleet.hidden}", headers=bearer)).status == 404
        assert (await client.post("/api/test/change", headers=bearer)).status == 403
        # Pages are for browsers: a token there does not log in.
        page = await client.get("/", headers=bearer, allow_redirects=False)
        assert page.status == 302


async def test_sensitive_actions_need_a_recent_password_and_are_audited(fleet: Fleet) -> None:
    async with fleet.client() as client:
        csrf = await login(client, "olga")
        headers = {"X-CSRF-Token": csrf}
        resp = await client.post("/api/test/sensitive", headers=headers)
        assert resp.status == 200, "a fresh login counts as a recent password"
        await age_step_up(fleet, "olga")
        resp = await client.post("/api/test/sensitive", headers=headers)
        assert resp.status == 401
        assert await resp.json() == {"error": "re-authentication required", "reauth": "/reauth"}
    (entry,) = await audit.search(fleet.pool, audit.AuditQuery(action="exec"))
    assert entry.username == "olga" and entry.address == "127.0.0.1"


async def test_logins_are_audited_with_their_address_and_outcome(fleet: Fleet) -> None:
    async with fleet.client() as client:
        page = await (await client.get("/login")).text()
        match = CSRF_FIELD.search(page)
        assert match
        resp = await client.post(
            "/login",
            data={"username": "vic", "password": "wrong one", "csrf_token": match.group(1)},
        )
        assert resp.status == 401
        await login(client, "vic")
    entries = await audit.search(fleet.pool, audit.AuditQuery(action="login."))
    assert [(e.action, e.username, e.success) for e in entries] == [
        ("login.success", "vic", True),
        ("login.failure", "vic", False),
    ]
    assert entries[0].user_id == fleet.viewer.id
    assert all(e.address == "127.0.0.1" for e in entries)


async def post_login(client: aiohttp.ClientSession, username: str, password: str) -> int:
    page = await (await client.get("/login")).text()
    match = CSRF_FIELD.search(page)
    token = match.group(1) if match else ""
    resp = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        allow_redirects=False,
    )
    return resp.status


async def test_a_stranger_cannot_lock_out_a_user_who_logged_in_from_this_browser_before(
    fleet: Fleet,
) -> None:
    fleet.app[LIMITER].user_attempts = 3  # the per-username ceiling, small for the test
    async with fleet.client() as owner, fleet.client() as stranger:
        csrf = await login(owner, "vic")  # the owner's browser is now a trusted device for vic
        await owner.post("/logout", data={"csrf_token": csrf})
        assert await post_login(owner, "vic", "typo typo") == 401
        for _ in range(2):  # with the owner's typo: 3 failures for vic
            assert await post_login(stranger, "vic", "guess guess") == 401
        assert await post_login(stranger, "vic", PASSWORD) == 429
        # The owner's browser, which logged in as vic before, still gets in.
        assert await post_login(owner, "vic", PASSWORD) == 302
