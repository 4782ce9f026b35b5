"""GET /api/targets: the targets list for the UI, fed by the real Scraper."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import free_port
from tests.web.test_web import PASSWORD, Site
from vpsmon.collector import accounts
from vpsmon.collector.access import grant_server
from vpsmon.collector.app import run_collector
from vpsmon.collector.config import StaticTarget, TargetFiles, load_config
from vpsmon.collector.head import Head
from vpsmon.collector.scrape.loop import Scraper
from vpsmon.collector.scrape.status import SourceStatus
from vpsmon.collector.scrape.target import Target
from vpsmon.web.app import create_app
from vpsmon.web.targets import TARGET_STATUS

HOSTILE = "<script>alert(1)</script>"
SOURCES = [SourceStatus("file", "/etc/t.yml", 0, "/etc/t.yml: broken")]


async def add_target(pool: asyncpg.Pool, name: str) -> Target:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    server_id = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ($1, $2) RETURNING id", name, url
    )
    return Target(server_id, name, url, 0.2, 0.2, {"env": "prod"}, bearer_token="never-shown")


@asynccontextmanager
async def scraping(pool: asyncpg.Pool, targets: list[Target]) -> AsyncIterator[TestClient]:
    async with Scraper([], body_size_limit=1 << 20, sample_limit=100) as scraper:
        scraper.sources = lambda: SOURCES
        await scraper.sync(targets)
        for _ in range(50):  # every target has failed once (nothing listens)
            if all(s.health == "down" for s in scraper.target_status()):
                break
            await asyncio.sleep(0.1)
        app = create_app(load_config(None, env={}), pool, Head())
        app[TARGET_STATUS] = scraper
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield client


async def get_targets(pool: asyncpg.Pool, client: TestClient, user: str) -> tuple[str, Any]:
    site = Site(client, pool, Head())
    resp = await site.post_login(user, PASSWORD)
    assert resp.status == 302
    resp = await client.get("/api/targets")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    return await resp.text(), await resp.json()


async def test_the_targets_list_shows_health_and_last_error_and_needs_a_login(
    pool: asyncpg.Pool,
) -> None:
    await accounts.create_user(pool, "root", PASSWORD, "admin")
    target = await add_target(pool, HOSTILE)
    async with scraping(pool, [target]) as client:
        anonymous = await client.get("/api/targets")
        assert anonymous.status == 401
        text, body = await get_targets(pool, client, "root")
    [row] = body["targets"]
    assert row["name"] == HOSTILE  # data in JSON; the UI escapes it
    assert row["url"] == target.url
    assert row["health"] == "down"
    assert row["last_error"].startswith("connection failed")
    assert row["labels"] == {"env": "prod", "instance": target.instance, "job": "vpsmon"}
    assert row["source"] == "api"
    assert body["sources"] == [
        {"kind": "file", "path": "/etc/t.yml", "targets": 0, "error": "/etc/t.yml: broken",
         "updated_at": None}
    ]  # fmt: skip
    assert "never-shown" not in text


async def test_a_viewer_sees_only_the_targets_of_servers_granted_and_no_sources(
    pool: asyncpg.Pool,
) -> None:
    viewer = await accounts.create_user(pool, "vera", PASSWORD, "viewer")
    mine, other = await add_target(pool, "mine"), await add_target(pool, "other")
    await grant_server(pool, viewer.id, mine.server_id)
    async with scraping(pool, [mine, other]) as client:
        text, body = await get_targets(pool, client, "vera")
    assert [row["name"] for row in body["targets"]] == ["mine"]
    assert body["sources"] == []
    assert other.url not in text


async def test_an_app_without_a_scraper_answers_with_empty_lists(pool: asyncpg.Pool) -> None:
    await accounts.create_user(pool, "root", PASSWORD, "admin")
    app = create_app(load_config(None, env={}), pool, Head())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        _, body = await get_targets(pool, client, "root")
    assert body == {"targets": [], "sources": []}


async def test_the_running_collector_serves_its_targets_and_sources_on_both_apis(
    database_url: str, tmp_path: Path
) -> None:
    """run_collector wires the scraper into /api/targets and Prometheus' /api/v1/targets."""
    broken = tmp_path / "fleet.yml"
    broken.write_text("- targets: [10.0.0.1:9100\n", encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{free_port()}/metrics"
    config = dataclasses.replace(
        load_config(
            None, env={}, overrides={"listen": f"127.0.0.1:{port}", "scrape.interval": "1s"}
        ),
        targets=(StaticTarget("static-1", url),),
        target_files=(TargetFiles((str(broken),)),),
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run_collector(
            config, database_url, stop, admin_password=PASSWORD, on_ready=lambda r: ready.set()
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/login") as resp:
                token = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
            assert token
            async with http.post(
                f"{base}/login",
                data={"username": "admin", "password": PASSWORD, "csrf_token": token.group(1)},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 302
            body: dict[str, Any] = {}
            for _ in range(40):
                async with http.get(f"{base}/api/targets") as resp:
                    body = await resp.json()
                if body["targets"] and body["targets"][0]["health"] == "down":
                    break
                await asyncio.sleep(0.25)
            async with http.get(f"{base}/api/v1/targets") as resp:
                prom = await resp.json()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    [row] = body["targets"]
    assert (row["name"], row["source"], row["health"]) == ("static-1", "static", "down")
    assert row["last_error"].startswith("connection failed")
    files = [s for s in body["sources"] if s["kind"] == "file"]
    assert files[0]["path"] == str(broken) and "invalid YAML/JSON" in files[0]["error"]
    [active] = prom["data"]["activeTargets"]
    assert active["scrapeUrl"] == url and active["health"] == "down"
    assert active["lastError"].startswith("connection failed")
