"""Notifications in the UI and API: admin-only channels with send test, secrets never shown,
silences by operators over the Alertmanager-shaped API, routing validation, SSRF guard."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.notify.receiver import Receiver
from tests.web.test_servers import HOSTILE, PASSWORD, Browser, login
from vpsmon.collector import accounts
from vpsmon.collector.config import load_config
from vpsmon.collector.head import Head
from vpsmon.web.app import create_app
from vpsmon.web.notify import NOTIFY


async def _server(pool: asyncpg.Pool, env: dict[str, str]) -> TestServer:
    await accounts.create_user(pool, "root", PASSWORD, "admin")
    await accounts.create_user(pool, "oper", PASSWORD, "operator")
    await accounts.create_user(pool, "watcher", PASSWORD, "viewer")
    return TestServer(create_app(load_config(None, env=env), pool, Head()), host="127.0.0.1")


@pytest.fixture
async def site(pool: asyncpg.Pool) -> AsyncIterator[TestServer]:
    async with await _server(pool, {"VPSMON_NOTIFY_ALLOWED_HOSTS": "127.0.0.1"}) as server:
        yield server


async def as_user(server: TestServer, name: str) -> tuple[TestClient, Browser]:
    client = TestClient(server)
    await client.start_server()
    return client, await login(client, name)


async def add_webhook(b: Browser, name: str, url: str, token: str = "") -> int:
    resp = await b.client.post(
        "/notify/channels/new",
        data={
            "csrf_token": b.csrf,
            "kind": "webhook",
            "name": name,
            "s_url": url,
            "s_bearer_token": token,
            "language": "en",
            "send_resolved": "on",
            "enabled": "on",
            "catch_all": "on",
            "action": "save",
        },
        allow_redirects=False,
    )
    assert resp.status == 302, await resp.text()
    status, channels = await b.api("GET", "/api/notify/channels")
    return next(c["id"] for c in channels if c["name"] == name)


async def test_admin_adds_a_channel_and_send_test_reaches_it_with_the_secret_hidden(
    site: TestServer,
) -> None:
    client, admin = await as_user(site, "root")
    try:
        async with Receiver() as hook:
            channel_id = await add_webhook(admin, "ops-hook", hook.url + "/in", "s3cret-token")
            page = await (await client.get("/notify/channels")).text()
            assert "ops-hook" in page and "s3cret-token" not in page
            edit = await (await client.get(f"/notify/channels/{channel_id}/edit")).text()
            assert "s3cret-token" not in edit
            _, channels = await admin.api("GET", "/api/notify/channels")
            assert channels[0]["settings"]["bearer_token"] == "••••••"
            resp = await client.post(
                f"/notify/channels/{channel_id}/test", data={"csrf_token": admin.csrf}
            )
            text = await resp.text()
            assert 'id="test-result"' in text and "HTTP 200" in text
            assert len(hook.requests) == 1
            sent = hook.requests[0]
            assert sent.headers["Authorization"] == "Bearer s3cret-token"
            assert sent.body["version"] == "4"
            assert sent.body["alerts"][0]["labels"]["alertname"] == "VpsmonTest"
            log = await (await client.get("/notify/log")).text()
            assert "ops-hook" in log and "HTTP 200" in log
    finally:
        await client.close()


async def test_viewer_cannot_add_channels_or_silences_and_csrf_is_required(
    site: TestServer,
) -> None:
    client, viewer = await as_user(site, "watcher")
    try:
        resp = await client.get("/notify/channels/new?kind=webhook")
        assert resp.status == 403
        resp = await client.post(
            "/notify/channels/new",
            data={"csrf_token": viewer.csrf, "kind": "webhook", "name": "x", "s_url": "http://a"},
        )
        assert resp.status == 403
        status, _ = await viewer.api("POST", "/api/notify/silences", {"matchers": []})
        assert status == 403
        assert (await client.get("/notify/alerts")).status == 200
        client.session.cookie_jar.clear()
        oper = await login(client, "oper")
        status, _ = await oper.api(
            "POST",
            "/api/notify/silences",
            {
                "matchers": [{"name": "alertname", "value": "X", "isRegex": False}],
                "endsAt": "2099-01-01T00:00:00Z",
            },
            csrf=False,
        )
        assert status == 403, "a session without the CSRF token changes nothing"
    finally:
        await client.close()


async def test_operator_silences_through_the_api_and_expires_it(
    pool: asyncpg.Pool, site: TestServer
) -> None:
    from vpsmon.collector import access as grants

    # The silence pins instance: only a user who may see every server sees it listed.
    oper_id = await pool.fetchval("SELECT id FROM users WHERE username = 'oper'")
    await grants.set_grants(pool, oper_id, all_servers=True, server_ids=[], groups=[])
    client, oper = await as_user(site, "oper")
    try:
        status, body = await oper.api(
            "POST",
            "/api/notify/silences",
            {
                "matchers": [{"name": "instance", "value": "web-.*", "isRegex": True}],
                "endsAt": "2099-01-01T00:00:00Z",
                "comment": HOSTILE,
                "createdBy": "someone-else",
            },
        )
        assert status == 200, body
        silence_id = body["silenceID"]
        _, silences = await oper.api("GET", "/api/notify/silences")
        assert silences[0]["createdBy"] == "oper"
        assert silences[0]["status"]["state"] == "active"
        page = await (await client.get("/notify/silences")).text()
        assert HOSTILE not in page and "&lt;img" in page
        status, body = await oper.api(
            "POST",
            "/api/notify/silences",
            {
                "matchers": [{"name": "a", "value": ".*", "isRegex": True}],
                "endsAt": "2099-01-01T00:00:00Z",
            },
        )
        assert status == 400 and "must not match the empty string" in body["error"]
        status, _ = await oper.api("DELETE", f"/api/notify/silences/{silence_id}")
        assert status == 200
        _, silences = await oper.api("GET", "/api/notify/silences")
        assert silences[0]["status"]["state"] == "expired"
    finally:
        await client.close()


async def test_invalid_routing_is_refused_with_the_place_named_and_nothing_saved(
    site: TestServer,
) -> None:
    client, admin = await as_user(site, "root")
    try:
        before = await (await client.get("/notify/routing")).text()
        for document, message in [
            ("route:\n  receiver: '*'\n  group_wait: soon\n", "route.group_wait"),
            ("route:\n  receiver: nobody\n", "unknown receiver(s): nobody"),
            ("route: [\n", "invalid YAML"),
        ]:
            resp = await client.post(
                "/notify/routing", data={"csrf_token": admin.csrf, "document": document}
            )
            assert resp.status == 400
            assert message in await resp.text()
        after = await (await client.get("/notify/routing")).text()
        assert re.findall(r"<textarea[^>]*>(.*?)</textarea>", before, re.S) == re.findall(
            r"<textarea[^>]*>(.*?)</textarea>", after, re.S
        )
        probe = await (
            await client.get("/notify/routing", params={"labels": 'alertname="X"'})
        ).text()
        assert 'id="probe-result"' in probe
    finally:
        await client.close()


async def test_channels_to_private_addresses_are_refused_by_default(pool: asyncpg.Pool) -> None:
    async with await _server(pool, {}) as server:
        client, admin = await as_user(server, "root")
        try:
            async with Receiver() as hook:
                targets = (hook.url, "http://169.254.169.254/latest/meta-data", "http://[::1]:9/")
                for i, url in enumerate(targets):
                    channel_id = await add_webhook(admin, f"c{i}", url)
                    status, body = await admin.api(
                        "POST", f"/api/notify/channels/{channel_id}/test"
                    )
                    assert status == 502 and body["status"] == "blocked", body
                    assert "private or local address" in body["error"]
                assert hook.requests == []
        finally:
            await client.close()


async def test_a_viewer_sees_only_alerts_of_granted_servers_and_not_the_log(
    pool: asyncpg.Pool, site: TestServer
) -> None:
    from vpsmon.collector import access as grants

    mine = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('mine', 'http://10.0.0.1:9190/metrics')"
        " RETURNING id"
    )
    await pool.execute(
        "INSERT INTO servers (name, url) VALUES ('theirs', 'http://10.0.0.2:9190/metrics')"
    )
    watcher = await pool.fetchval("SELECT id FROM users WHERE username = 'watcher'")
    await grants.grant_server(pool, watcher, mine)
    # The dispatcher learns servers on its periodic refresh; do it now rather than wait 15 s.
    await site.app[NOTIFY].dispatcher.refresh()
    client, oper = await as_user(site, "oper")
    try:
        status, _ = await oper.api(
            "POST",
            "/api/notify/alerts",
            [
                {"labels": {"alertname": "Down", "instance": "10.0.0.1:9190"}},
                {"labels": {"alertname": "Down", "instance": "10.0.0.2:9190"}},
                {"labels": {"alertname": "Secret", "server_id": "999999"}},
            ],
        )
        assert status == 200
        client.session.cookie_jar.clear()
        viewer = await login(client, "watcher")
        _, alerts = await viewer.api("GET", "/api/notify/alerts")
        assert [a["labels"]["instance"] for a in alerts] == ["10.0.0.1:9190"]
        page = await (await client.get("/notify/alerts")).text()
        assert "10.0.0.1:9190" in page and "10.0.0.2:9190" not in page and "Secret" not in page
        assert (await client.get("/notify/log")).status == 403
    finally:
        await client.close()


async def test_an_operator_sees_only_silences_of_granted_servers_and_expires_only_pinned_ones(
    pool: asyncpg.Pool, site: TestServer
) -> None:
    from vpsmon.collector import access as grants

    mine = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('mine', 'http://10.0.0.1:9190/metrics')"
        " RETURNING id"
    )
    theirs = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('theirs', 'http://10.0.0.2:9190/metrics')"
        " RETURNING id"
    )
    oper_id = await pool.fetchval("SELECT id FROM users WHERE username = 'oper'")
    await grants.grant_server(pool, oper_id, mine)
    await site.app[NOTIFY].dispatcher.refresh()

    def matcher(name: str, value: str, regex: bool = False) -> dict[str, object]:
        return {"name": name, "value": value, "isRegex": regex}

    bodies = {
        "their-instance": [matcher("instance", "10.0.0.2:9190")],
        "their-id": [matcher("alertname", "Down"), matcher("server_id", str(theirs))],
        "their-regex": [matcher("instance", r"10\.0\.0\.2:.*", True)],
        "fleet-wide": [matcher("alertname", "Fleet")],
        "my-instance": [matcher("instance", "10.0.0.1:9190")],
        "my-id": [matcher("server_id", str(mine))],
        "any-10": [matcher("instance", r"10\.0\.0\..*", True)],
    }
    client, admin = await as_user(site, "root")
    try:
        ids = {}
        for comment, matchers in bodies.items():
            status, body = await admin.api(
                "POST",
                "/api/notify/silences",
                {"matchers": matchers, "endsAt": "2099-01-01T00:00:00Z", "comment": comment},
            )
            assert status == 200, body
            ids[comment] = body["silenceID"]
        _, every = await admin.api("GET", "/api/notify/silences")
        assert {s["comment"] for s in every} == set(bodies)

        client.session.cookie_jar.clear()
        oper = await login(client, "oper")
        seen = {"fleet-wide", "my-instance", "my-id", "any-10"}
        _, listed = await oper.api("GET", "/api/notify/silences")
        assert {s["comment"] for s in listed} == seen
        page = await (await client.get("/notify/silences")).text()
        for comment in bodies:
            assert (comment in page) == (comment in seen), comment
        for hidden in ("their-instance", "their-id", "their-regex"):
            status, body = await oper.api("DELETE", f"/api/notify/silences/{ids[hidden]}")
            assert status == 404, body
            resp = await client.post(
                f"/notify/silences/{ids[hidden]}/expire",
                data={"csrf_token": oper.csrf},
                allow_redirects=False,
            )
            assert resp.status == 404
        # Visible but not pinned to a granted server by an equality matcher: the silence also
        # mutes alerts of servers the operator was not granted, so expiring it is refused.
        for unpinned in ("fleet-wide", "any-10"):
            status, body = await oper.api("DELETE", f"/api/notify/silences/{ids[unpinned]}")
            assert status == 403, body
            assert "pinned to a server granted to you" in body["error"]
            resp = await client.post(
                f"/notify/silences/{ids[unpinned]}/expire",
                data={"csrf_token": oper.csrf},
                allow_redirects=False,
            )
            assert resp.status == 403
            assert "pinned to a server granted to you" in await resp.text()
        # The page offers a working Expire button only for the pinned ones.
        for comment in seen:
            form = f'action="/notify/silences/{ids[comment]}/expire"'
            assert (form in page) == (comment in {"my-instance", "my-id"}), comment
        assert page.count("disabled title=") == 2
        status, _ = await oper.api("DELETE", f"/api/notify/silences/{ids['my-instance']}")
        assert status == 200
        resp = await client.post(
            f"/notify/silences/{ids['my-id']}/expire",
            data={"csrf_token": oper.csrf},
            allow_redirects=False,
        )
        assert resp.status == 302

        client.session.cookie_jar.clear()
        admin = await login(client, "root")
        _, every = await admin.api("GET", "/api/notify/silences")
        states = {s["comment"]: s["status"]["state"] for s in every}
        assert states["my-instance"] == states["my-id"] == "expired"
        assert all(
            states[c] == "active"
            for c in ("their-instance", "their-id", "their-regex", "fleet-wide", "any-10")
        )
        # An admin may expire anything, on the page and over the API.
        page = await (await client.get("/notify/silences")).text()
        assert "disabled title=" not in page
        for comment in ("fleet-wide", "their-regex"):
            status, body = await admin.api("DELETE", f"/api/notify/silences/{ids[comment]}")
            assert status == 200, body
        for comment in ("any-10", "their-id"):
            resp = await client.post(
                f"/notify/silences/{ids[comment]}/expire",
                data={"csrf_token": admin.csrf},
                allow_redirects=False,
            )
            assert resp.status == 302
        _, every = await admin.api("GET", "/api/notify/silences")
        states = {s["comment"]: s["status"]["state"] for s in every}
        assert {c for c, state in states.items() if state == "active"} == {"their-instance"}
    finally:
        await client.close()


async def test_an_operator_creates_silences_only_pinned_to_granted_servers(
    pool: asyncpg.Pool, site: TestServer
) -> None:
    """A silence that is fleet-wide, a regex, or names another server could mute alerts the
    operator may not see: refused (403, nothing stored); one pinned to their server is kept."""
    from vpsmon.collector import access as grants

    mine = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('mine', 'http://10.0.0.1:9190/metrics')"
        " RETURNING id"
    )
    theirs = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('theirs', 'http://10.0.0.2:9190/metrics')"
        " RETURNING id"
    )
    oper_id = await pool.fetchval("SELECT id FROM users WHERE username = 'oper'")
    await grants.grant_server(pool, oper_id, mine)
    await site.app[NOTIFY].dispatcher.refresh()

    def body(*matchers: tuple[str, str, bool]) -> dict[str, object]:
        return {
            "matchers": [{"name": n, "value": v, "isRegex": r} for n, v, r in matchers],
            "endsAt": "2099-01-01T00:00:00Z",
            "comment": "c",
        }

    client, oper = await as_user(site, "oper")
    try:
        for refused in (
            body(("alertname", "HighCPU", False)),
            body(("instance", r"10\.0\.0\..*", True)),
            body(("instance", "10.0.0.2:9190", False)),
            body(("server_id", str(theirs), False)),
        ):
            status, answer = await oper.api("POST", "/api/notify/silences", refused)
            assert status == 403, (refused, answer)
            assert "granted to you" in answer["error"]
        resp = await client.post(
            "/notify/silences",
            data={"csrf_token": oper.csrf, "matchers": 'alertname="X"', "duration": "1h"},
            allow_redirects=False,
        )
        assert resp.status == 403 and "granted to you" in await resp.text()
        assert await pool.fetchval("SELECT count(*) FROM notify_silences") == 0
        for kept in (
            body(("instance", "10.0.0.1:9190", False), ("alertname", "HighCPU", False)),
            body(("server_id", str(mine), False)),
        ):
            status, answer = await oper.api("POST", "/api/notify/silences", kept)
            assert status == 200, answer
        assert await pool.fetchval("SELECT count(*) FROM notify_silences") == 2
    finally:
        await client.close()
