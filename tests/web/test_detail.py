"""The detail page's history API (one JSON answer per range), live points and containers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.web.samples import add_day_of_history
from tests.web.test_servers import PASSWORD, Browser, login
from vpsmon.collector import accounts
from vpsmon.collector.config import load_config
from vpsmon.collector.head import Head, ServerState, Snapshot
from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.web.app import create_app
from vpsmon.web.charts import GridSeries, build, rate
from vpsmon.web.detail import containers


@pytest.fixture
async def site(pool: asyncpg.Pool) -> AsyncIterator[tuple[Browser, Head, int]]:
    await accounts.create_user(pool, "root", PASSWORD, "admin")
    server_id = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('web-1', 'http://10.0.0.5:9190/metrics')"
        " RETURNING id"
    )
    head = Head()
    app = create_app(load_config(None, env={"VPSMON_SCRAPE_INTERVAL": "60s"}), pool, head)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield await login(client, "root"), head, server_id


def chart(body: dict, chart_id: str) -> dict[str, list]:
    found = next(c for c in body["charts"] if c["id"] == chart_id)
    return {s["name"]: s["values"] for s in found["series"]}


def present(values: list) -> list[float]:
    return [v for v in values if v is not None]


async def test_a_day_of_history_comes_in_one_answer_of_about_a_thousand_points(
    site: tuple[Browser, Head, int], pool: asyncpg.Pool
) -> None:
    browser, _, server_id = site
    now = time.time()
    await add_day_of_history(pool, server_id, now)
    status, body = await browser.api("GET", f"/api/servers/{server_id}/history?range=24h")
    assert status == 200
    assert body["step"] == 120  # 86,400 s / 1,000 points, rounded up to a round step
    assert 700 <= len(body["t"]) <= 1001
    ids = [c["id"] for c in body["charts"]]
    assert ids == ["cpu", "memory", "load", "disk", "net", "tcp", "procs"]
    for c in body["charts"]:
        for s in c["series"]:
            assert len(s["values"]) == len(body["t"])
    cpu = chart(body, "cpu")
    assert set(cpu) == {"user", "system"}
    assert all(abs(v - 25) < 0.5 for v in present(cpu["user"]))
    memory = chart(body, "memory")
    # Values are rounded to 4 significant digits: plenty for a chart, a third of the bytes.
    assert all(abs(v / 2**31 - 1) < 1e-3 for v in present(memory["used"]))
    assert "swap" not in memory  # no swap configured: no swap line
    net = chart(body, "net")
    assert set(net) == {"eth0 rx", "eth0 tx"}  # loopback is not a network
    rx = present(net["eth0 rx"])
    # The reboot in the middle never shows as a negative or huge rate.
    assert min(rx) >= 0 and max(rx) <= 1e6 * 1.01
    assert sum(1 for v in rx if abs(v - 1e6) < 1e3) >= len(rx) - 2
    assert (
        present(chart(body, "disk")["/"]) and abs(present(chart(body, "disk")["/"])[0] - 40) < 1e-6
    )


async def test_custom_ranges_are_checked(site: tuple[Browser, Head, int]) -> None:
    browser, _, server_id = site
    base = f"/api/servers/{server_id}/history"
    for query in ("?range=2y", "?start=abc", "?start=100&end=50", "?start=0&end=1e12", ""):
        status, body = await browser.api("GET", base + query)
        assert status == 400, query
        assert "error" in body
    now = time.time()
    status, body = await browser.api("GET", f"{base}?start={now - 600}&end={now}")
    assert status == 200 and body["step"] == 60 and body["charts"] == []


async def test_the_watched_server_sends_chart_points_over_the_live_socket(
    site: tuple[Browser, Head, int],
) -> None:
    browser, head, server_id = site
    ws = await browser.client.ws_connect(
        "/api/live", headers={"Origin": f"http://{browser.client.host}:{browser.client.port}"}
    )
    try:
        assert json.loads(await ws.receive_str())["type"] == "snapshot"
        await ws.send_str(json.dumps({"watch": server_id}))
        await asyncio.sleep(0.1)
        target = Target(server_id, "web-1", "http://10.0.0.5:9190/metrics", 15.0, 10.0)
        now = time.time()
        for i, (user, idle) in enumerate(((10.0, 90.0), (13.0, 91.0))):
            await head.append(
                ScrapeResult(
                    target,
                    now + i * 5,
                    0.01,
                    [
                        Sample("node_cpu_seconds_total", (("cpu", "0"), ("mode", "user")), user),
                        Sample("node_cpu_seconds_total", (("cpu", "0"), ("mode", "idle")), idle),
                        Sample("node_load1", (), 0.5),
                    ],
                )
            )
        points = []
        while len(points) < 1:
            msg = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
            if msg["type"] == "point" and msg["point"] is not None:
                points.append(msg)
        assert points[0]["id"] == server_id
        assert points[0]["point"]["charts"]["cpu"]["user"] == 75.0
        assert points[0]["point"]["charts"]["load"]["1"] == 0.5
    finally:
        await ws.close()


def test_a_counter_reset_between_two_readings_counts_the_new_reading() -> None:
    s = GridSeries(
        "node_network_receive_bytes_total", {"device": "eth0"}, [100.0, 50.0], [0.0, 10.0]
    )
    assert rate(s, 1) == [None, 5.0]
    charts = build([s], 2, 1)
    assert charts[0]["id"] == "net" and charts[0]["series"][0]["values"] == [None, 5.0]


def test_containers_come_from_cadvisor_series_and_container_info() -> None:
    prev = Snapshot(
        100.0,
        {("container_cpu_usage_seconds_total", (("name", "web"),)): 10.0},
    )
    cur = Snapshot(
        110.0,
        {
            ("container_cpu_usage_seconds_total", (("name", "web"),)): 15.0,
            ("container_memory_usage_bytes", (("name", "web"),)): 2e8,
            (
                "vpsmon_container_info",
                (("image", "nginx:1"), ("name", "web"), ("state", "running")),
            ): 1.0,
            (
                "vpsmon_container_info",
                (("image", "redis:7"), ("name", "cache"), ("state", "exited")),
            ): 1.0,
        },
    )
    listed = containers(ServerState(1, up=True, current=cur, previous=prev))
    assert listed == [
        {"name": "web", "image": "nginx:1", "state": "running", "cpu": 0.5, "memory": 2e8},
        {"name": "cache", "image": "redis:7", "state": "exited", "cpu": None, "memory": None},
    ]


def test_sparse_samples_join_into_lines_and_a_long_outage_stays_a_break() -> None:
    from vpsmon.web.history import columns_to_keep

    values: list[float | None] = [None] * 40
    for i in (0, 5, 10, 15, 35, 39):  # every 5 steps, then nothing for 20 steps
        values[i] = 1.0
    charts = [{"id": "load", "unit": "number", "series": [{"name": "1", "values": values}]}]
    assert columns_to_keep(charts, 40) == [0, 5, 10, 15, 16, 35, 39]


async def test_history_reads_with_the_configured_retention_not_the_default(
    pool: asyncpg.Pool,
) -> None:
    # Raw samples kept one hour: a 6 h range must come from the 1-minute rollups (the default
    # retention keeps raw samples 15 days and would read raw rows that may be deleted).
    await accounts.create_user(pool, "root", PASSWORD, "admin")
    server_id = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('web-1', 'http://10.0.0.5:9190/metrics')"
        " RETURNING id"
    )
    for env, expected in (({}, "raw"), ({"VPSMON_STORAGE_RETENTION_RAW": "1h"}, "1m")):
        config = load_config(None, env={"VPSMON_SCRAPE_INTERVAL": "15s", **env})
        app = create_app(config, pool, Head())
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            browser = await login(client, "root")
            status, body = await browser.api("GET", f"/api/servers/{server_id}/history?range=6h")
        assert status == 200
        assert body["resolution"] == expected, env
