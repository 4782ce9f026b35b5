"""Backfill from the exporter's /history after a gap: the real exporter, the real collector
(run_collector) and real PostgreSQL.

Short intervals (1 s scrapes, a 1 s exporter collection) and a gap of about 20 s stand in for
the issue's two minutes: the mechanism does not depend on the length of the gap, up to the
exporter's history.retention.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import free_port
from vpsmon.collector.app import run_collector
from vpsmon.collector.config import StaticTarget, load_config
from vpsmon.collector.scrape.backfill import HistoryBackfill, group_by_time
from vpsmon.collector.scrape.loop import Scraper, ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.status import BackfillStatus
from vpsmon.collector.scrape.target import Target
from vpsmon.config import HostPort
from vpsmon.exporter.config import load_config as load_exporter_config
from vpsmon.exporter.server import serve

INTERVAL = 1.0
# A stored series may have one interval between points; timers wake a little late.
ALLOWED_GAP = INTERVAL * 1.3


@asynccontextmanager
async def exporter() -> AsyncIterator[str]:
    cfg = load_exporter_config(
        None,
        env={},
        overrides={
            "interval": "1s",
            "collectors.hwmon": False,
            "collectors.filesystem": False,
            "collectors.diskstats": False,
        },
    )
    exporter = await serve(dataclasses.replace(cfg, listen=HostPort("127.0.0.1", 0)))
    try:
        yield f"http://127.0.0.1:{exporter.port}/metrics"
    finally:
        await exporter.close()


@asynccontextmanager
async def collector(database_url: str, url: str) -> AsyncIterator[None]:
    config = load_config(
        None,
        env={},
        overrides={"listen": f"127.0.0.1:{free_port()}", "scrape.interval": "1s"},
    )
    config = dataclasses.replace(config, targets=(StaticTarget("box", url),))
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_collector(
            config,
            database_url,
            stop,
            admin_password="pw-0123456789",
            on_ready=lambda r: ready.set(),
        )
    )
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def stored_times(conn: asyncpg.Connection, metric: str) -> list[float]:
    rows = await conn.fetch(
        "SELECT extract(epoch FROM s.ts)::float8 AS t FROM samples s"
        " JOIN series r ON r.id = s.series_id WHERE r.metric = $1 AND s.value = s.value"
        " ORDER BY s.ts",
        metric,
    )
    return [r["t"] for r in rows]


def largest_gap(times: list[float]) -> tuple[float, float]:
    gaps = [(b - a, a) for a, b in zip(times, times[1:], strict=False)]
    return max(gaps) if gaps else (0.0, 0.0)


async def wait_for(check: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.25)
    return False


async def test_a_collector_stopped_for_20_seconds_backfills_the_gap_from_history(
    database_url: str,
) -> None:
    async with exporter() as url:
        async with collector(database_url, url):
            await asyncio.sleep(4)
        conn = await asyncpg.connect(database_url)
        try:
            before = await stored_times(conn, "node_load1")
            assert len(before) >= 3
            stopped_at = before[-1]
            await asyncio.sleep(20)
            async with collector(database_url, url):

                async def filled() -> bool:
                    times = await stored_times(conn, "node_load1")
                    return largest_gap(times)[0] <= ALLOWED_GAP and times[-1] > stopped_at + 21

                assert await wait_for(filled, 20), largest_gap(
                    await stored_times(conn, "node_load1")
                )
                await asyncio.sleep(1.5)
            times = await stored_times(conn, "node_load1")
            # up is the collector's own verdict: it has no points in the gap
            ups = await stored_times(conn, "up")
        finally:
            await conn.close()
    gap, where = largest_gap(times)
    assert gap <= ALLOWED_GAP, f"a gap of {gap:.2f}s at {where}"
    assert sum(1 for t in times if stopped_at < t < stopped_at + 20) >= 17
    assert largest_gap(ups)[0] > 15


class FlakyProxy:
    """Forwards to the exporter, or refuses everything while `down` (the network is away)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rsplit("/", 1)[0]
        self.down = False
        app = web.Application()
        app.router.add_get("/{path}", self.forward)
        self.server = TestServer(app, host="127.0.0.1")

    async def forward(self, request: web.Request) -> web.Response:
        if self.down:
            raise web.HTTPServiceUnavailable(text="network away")
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(
                f"{self.upstream}/{request.match_info['path']}",
                params=request.query,
                headers={"Accept-Encoding": request.headers.get("Accept-Encoding", "identity")},
            ) as resp:
                body = await resp.read()
                return web.Response(
                    body=body,
                    status=resp.status,
                    headers={
                        k: v for k, v in resp.headers.items() if k.lower() == "content-encoding"
                    },
                )


async def test_a_target_unreachable_for_a_while_is_backfilled_when_it_returns() -> None:
    stored: list[ScrapeResult] = []
    scraped: list[ScrapeResult] = []
    reports: list[BackfillStatus] = []

    async def store(result: ScrapeResult) -> None:
        stored.append(result)

    async def on_scrape(result: ScrapeResult) -> None:
        scraped.append(result)

    async def never_stored(server_id: int) -> float | None:
        return None

    backfill = HistoryBackfill(store, never_stored, max_gap=3600, body_size_limit=1 << 24)
    async with exporter() as url:
        proxy = FlakyProxy(url)
        await proxy.server.start_server()
        try:
            target = Target(1, "box", str(proxy.server.make_url("/metrics")), INTERVAL, INTERVAL)
            async with Scraper(
                [on_scrape], on_store=[store], body_size_limit=1 << 24, sample_limit=50_000,
                backfill=backfill,
            ) as scraper:  # fmt: skip
                await scraper.sync([target])
                await asyncio.sleep(2.5)
                proxy.down = True
                await asyncio.sleep(6)
                proxy.down = False

                async def done() -> bool:
                    status = scraper.target_status()[0].backfill
                    if status is not None:
                        reports.append(status)
                    return status is not None and status.done

                assert await wait_for(done, 10)
        finally:
            await proxy.server.close()
    status = reports[-1]
    assert status.error is None
    assert status.samples > 0
    failed = [r for r in scraped if not r.up]
    assert len(failed) >= 4
    backfilled = sorted({r.timestamp for r in stored if r.kind == "backfill"})
    assert all(r.kind == "backfill" for r in stored)
    # every second of the outage is covered by an exporter collection
    assert backfilled[0] <= failed[0].timestamp + INTERVAL
    assert backfilled[-1] >= failed[-1].timestamp - INTERVAL
    assert largest_gap(backfilled)[0] <= ALLOWED_GAP
    # the backfilled instants are real exporter samples, no synthetic series
    names = {s.name for r in stored for s in r.samples}
    assert "node_load1" in names and "up" not in names


async def test_a_plain_node_exporter_without_history_is_reported_and_left_alone() -> None:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="node_load1 0.5\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    stored: list[ScrapeResult] = []

    async def store(result: ScrapeResult) -> None:
        stored.append(result)

    async def long_ago(server_id: int) -> float | None:
        return time.time() - 600

    try:
        backfill = HistoryBackfill(store, long_ago, max_gap=3600, body_size_limit=1 << 20)
        target = Target(1, "node", str(server.make_url("/metrics")), 0.5, 0.5)
        async with Scraper(
            [], on_store=[store], body_size_limit=1 << 20, sample_limit=100, backfill=backfill
        ) as scraper:
            await scraper.sync([target])

            async def reported() -> bool:
                status = scraper.target_status()[0].backfill
                return status is not None and status.done

            assert await wait_for(reported, 5)
            status = scraper.target_status()[0]
    finally:
        await server.close()
    assert status.health == "up"
    assert status.backfill is not None
    assert status.backfill.error == "server returned HTTP status 404 Not Found"
    assert stored == []


def test_history_instants_share_label_tuples_and_keep_only_the_window() -> None:
    labels = (("cpu", "0"),)
    rows = [
        (Sample("x", labels, 1.0), 10.0),
        (Sample("x", tuple(list(labels)), 2.0), 11.0),
        (Sample("x", labels, 3.0), 99.0),
        (Sample("y", (), 4.0), None),
    ]
    grouped = group_by_time(rows, 10.0, 20.0)
    assert sorted(grouped) == [10.0, 11.0]
    assert grouped[11.0][0].labels is grouped[10.0][0].labels
