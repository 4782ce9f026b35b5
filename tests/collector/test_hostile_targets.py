"""Hostile targets (issue #4): garbage, 100 MB, a million samples, never answering.

Each fails its scrapes with a reason the targets list shows; a good target scraped beside
them keeps its interval; memory stays flat from round to round. RSS is only a generous sanity
bound here (speed and memory are measured in bench/).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import psutil
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vpsmon.collector.scrape.loop import Scraper, ScrapeResult
from vpsmon.collector.scrape.target import Target

INTERVAL = 2.0
TIMEOUT = 1.5
BODY_LIMIT = 24 * 1024 * 1024
SAMPLE_LIMIT = 50_000
MB = 1024 * 1024


async def stream(request: web.Request, chunks: AsyncIterator[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except (ConnectionResetError, ConnectionError):
        pass  # the collector hung up at its limit: what we want
    return response


class HostileExporter:
    def __init__(self) -> None:
        self.never = asyncio.Event()
        # Made once: the test measures the collector, not this server.
        self.million_blocks = [b"# TYPE many gauge\n"] + [
            "".join(f'many{{i="{i}"}} 1\n' for i in range(start, start + 50_000)).encode()
            for start in range(0, 1_000_000, 50_000)
        ]
        app = web.Application()
        app.router.add_get("/good", self.good)
        app.router.add_get("/garbage", self.garbage)
        app.router.add_get("/huge", self.huge)
        app.router.add_get("/million", self.million)
        app.router.add_get("/silent", self.silent)
        self.server = TestServer(app, host="127.0.0.1")

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def good(self, request: web.Request) -> web.Response:
        return web.Response(text="# TYPE node_load1 gauge\nnode_load1 0.5\n")

    async def garbage(self, request: web.Request) -> web.Response:
        return web.Response(body=os.urandom(4096).replace(b"\n", b" ") + b"\n{{{ 1\n")

    async def huge(self, request: web.Request) -> web.StreamResponse:
        async def chunks() -> AsyncIterator[bytes]:
            line = b"# a comment line is valid exposition, so only the size can stop it\n"
            block = line * (MB // len(line))
            for _ in range(100):  # 100 MB
                yield block

        return await stream(request, chunks())

    async def million(self, request: web.Request) -> web.StreamResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for block in self.million_blocks:
                yield block

        return await stream(request, chunks())

    async def silent(self, request: web.Request) -> web.Response:
        await self.never.wait()  # accepts the connection, never answers
        return web.Response(text="")


@pytest.fixture
async def hostile() -> AsyncIterator[HostileExporter]:
    exporter = HostileExporter()
    await exporter.server.start_server()
    try:
        yield exporter
    finally:
        exporter.never.set()
        await exporter.server.close()


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


async def test_hostile_targets_fail_with_reasons_while_a_good_one_keeps_its_interval(
    hostile: HostileExporter,
) -> None:
    results: dict[str, list[ScrapeResult]] = {}

    async def record(result: ScrapeResult) -> None:
        results.setdefault(result.target.name, []).append(result)

    paths = ["good", "garbage", "huge", "million", "silent"]
    targets = [
        Target(i, path, hostile.url(f"/{path}"), INTERVAL, TIMEOUT) for i, path in enumerate(paths)
    ]
    memory: list[int] = []
    async with Scraper([record], body_size_limit=BODY_LIMIT, sample_limit=SAMPLE_LIMIT) as scraper:
        await scraper.sync(targets)
        for _ in range(5):
            await asyncio.sleep(INTERVAL)
            memory.append(rss())
        status = {s.name: s for s in scraper.target_status()}

    good = results["good"]
    assert len(good) >= 4 and all(r.up for r in good)
    # On its schedule: one scrape per interval, none missed or doubled. A scrape delayed by a
    # busy machine is followed by one on time, so single gaps may run apart by more than the
    # jitter; their mean may not.
    gaps = [b.timestamp - a.timestamp for a, b in zip(good, good[1:], strict=False)]
    assert all(INTERVAL * 0.5 < gap < INTERVAL * 1.5 for gap in gaps), gaps
    assert INTERVAL * 0.9 < sum(gaps) / len(gaps) < INTERVAL * 1.1, gaps

    expected = {
        "garbage": "invalid exposition",
        "huge": f"body size limit of {BODY_LIMIT} bytes exceeded",
        "million": f"sample limit {SAMPLE_LIMIT} exceeded",
        "silent": f"timed out after {TIMEOUT:g}s",
    }
    for name, reason in expected.items():
        assert len(results[name]) >= 2, name
        assert all(not r.up and r.samples == [] for r in results[name]), name
        assert results[name][-1].error is not None
        assert results[name][-1].error.startswith(reason), (name, results[name][-1].error)
        assert status[name].health == "down"
        assert status[name].last_error is not None
        assert status[name].last_error.startswith(reason)
    assert status["good"].health == "up" and status["good"].last_error is None

    # flat: after the first rounds (allocator warm-up) memory does not grow with every round
    print("RSS MiB per round:", [m // MB for m in memory])
    growth = memory[-1] - memory[1]
    assert growth < 64 * MB, [m // MB for m in memory]
