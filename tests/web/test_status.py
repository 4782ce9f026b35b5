"""The public status page: off by default; when on, public servers only, nothing private."""

from __future__ import annotations

import time

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from vpsmon.collector.config import load_config
from vpsmon.collector.head import Head
from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.collector.servers import create_server, validate
from vpsmon.web.app import create_app

HOSTILE = "<img src=x onerror=alert(1)>"


async def test_the_status_page_is_off_by_default(pool: asyncpg.Pool) -> None:
    app = create_app(load_config(None, env={}), pool, Head())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/status")).status == 404
        assert (await client.get("/status/servers")).status == 404


async def test_the_status_page_shows_public_servers_without_addresses_or_secrets(
    pool: asyncpg.Pool,
) -> None:
    shown = await create_server(
        pool,
        validate(
            {
                "name": HOSTILE,
                "address": "198.51.100.23",
                "public": True,
                "country_code": "DE",
                "region": "Frankfurt",
                "notes": "root password is hunter2",
                "provider": "SecretHost",
                "labels": {"owner": "alice"},
            }
        ),
    )
    await create_server(pool, validate({"name": "private-db", "address": "198.51.100.99"}))
    head = Head()
    target = Target(shown.id, HOSTILE, shown.url, 15.0, 10.0)
    await head.append(
        ScrapeResult(
            target,
            time.time(),
            0.01,
            [
                Sample("node_load1", (), 0.3),
                Sample("node_uname_info", (("nodename", "db-internal-7"), ("release", "6.1")), 1),
            ],
        )
    )
    config = load_config(None, env={"VPSMON_STATUS_PAGE_ENABLED": "true"})
    app = create_app(config, pool, head)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/status")
        assert resp.status == 200
        page = await resp.text()
        body = await (await client.get("/status/servers")).text()
        data = await (await client.get("/status/servers")).json()
    assert [s["name"] for s in data["servers"]] == [HOSTILE]
    assert data["servers"][0]["online"] is True and data["servers"][0]["load1"] == 0.3
    for text in (page, body):
        for secret in (
            "198.51.100",
            "private-db",
            "hunter2",
            "SecretHost",
            "alice",
            "db-internal-7",
            "/metrics",
        ):
            assert secret not in text
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Frankfurt" in body
