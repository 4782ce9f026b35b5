"""GET /api/storage: the writer's and the spool's health for the UI."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from tests.web.test_web import PASSWORD, USERNAME, Site
from vpsmon.collector import accounts
from vpsmon.collector.config import load_config
from vpsmon.collector.head import Head
from vpsmon.collector.storage.maintenance import maintain
from vpsmon.collector.storage.spool import Spool
from vpsmon.collector.storage.writer import SampleWriter
from vpsmon.web.app import create_app
from vpsmon.web.keys import WRITER


async def test_storage_health_needs_a_login_and_shows_the_writer_and_maintenance(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await accounts.create_user(pool, USERNAME, PASSWORD, "viewer")
    head = Head()
    app = create_app(load_config(None, env={}), pool, head)
    app[WRITER] = SampleWriter(pool, "node", spool=Spool(tmp_path, 12345))
    await maintain(pool, 1_767_225_600.0 + 7200)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        site = Site(client, pool, head)
        resp = await client.get("/api/storage")
        assert resp.status == 401
        await site.login()
        resp = await client.get("/api/storage")
        assert resp.status == 200
        body = await resp.json()
    assert body["writer"]["database_ok"] is True
    assert body["writer"]["spool_max_bytes"] == 12345
    assert body["writer"]["spool_bytes"] == 0
    assert body["compacted_until"] == 1_767_225_600.0 + 3600
