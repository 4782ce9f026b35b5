"""Staleness markers and target status, through the real Scraper against real HTTP servers."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from vpsmon.collector.scrape.loop import Scraper, ScrapeResult, vanished
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.collector.storage.query import STALE_NAN, is_stale_marker
from vpsmon.collector.storage.writer import SampleWriter

INTERVAL = 0.3


class ChangingExporter:
    def __init__(self) -> None:
        self.payload = "a 1\nb 2\n"
        self.status = 200
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        self.server = TestServer(app, host="127.0.0.1")

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.payload, status=self.status)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/metrics"))


@pytest.fixture
async def exporter() -> AsyncIterator[ChangingExporter]:
    fake = ChangingExporter()
    await fake.server.start_server()
    try:
        yield fake
    finally:
        await fake.server.close()


class Recorder:
    def __init__(self) -> None:
        self.results: list[ScrapeResult] = []
        self.arrived = asyncio.Event()

    async def __call__(self, result: ScrapeResult) -> None:
        self.results.append(result)
        self.arrived.set()

    async def next(self) -> ScrapeResult:
        self.arrived.clear()
        await asyncio.wait_for(self.arrived.wait(), 5.0)
        return self.results[-1]


def stale_names(result: ScrapeResult) -> set[str]:
    return {s.name for s in result.with_synthetic() if is_stale_marker(s.value)}


def test_vanished_series_are_found_in_order_and_only_once() -> None:
    a, b, c = Sample("a", (), 1.0), Sample("b", (("x", "1"),), 2.0), Sample("c", (), 3.0)
    assert vanished([a, b, c], [a, b, c]) == []
    assert vanished([a, b, c], [c, a]) == [("b", (("x", "1"),))]
    assert vanished([a, b, b, c], []) == [("a", ()), ("b", (("x", "1"),)), ("c", ())]
    # the same name with other labels is another series
    assert vanished([b], [Sample("b", (("x", "2"),), 2.0)]) == [("b", (("x", "1"),))]


async def test_a_series_missing_from_the_next_scrape_gets_a_stale_marker(
    exporter: ChangingExporter,
) -> None:
    scrapes = Recorder()
    target = Target(1, "web-1", exporter.url, INTERVAL, INTERVAL)
    async with Scraper([scrapes], body_size_limit=1 << 20, sample_limit=100) as scraper:
        await scraper.sync([target])
        first = await scrapes.next()
        assert first.up and stale_names(first) == set()
        exporter.payload = "a 1\n"
        second = await scrapes.next()
        assert stale_names(second) == {"b"}
        stored = second.with_synthetic()
        marker = next(s for s in stored if s.name == "b")
        assert math.isnan(marker.value) and is_stale_marker(marker.value)
        # only once: the next scrape has nothing new to mark
        third = await scrapes.next()
        assert stale_names(third) == set()
        # the head sees the samples, never the markers
        assert [s.name for s in third.samples] == ["a"]


async def test_with_the_parser_cache_warm_a_label_change_or_a_vanished_series_gets_a_marker(
    exporter: ChangingExporter,
) -> None:
    scrapes = Recorder()
    target = Target(1, "web-1", exporter.url, INTERVAL, INTERVAL)
    exporter.payload = 'a{x="1"} 1\nb 2\nb 2\n'
    async with Scraper([scrapes], body_size_limit=1 << 20, sample_limit=100) as scraper:
        await scraper.sync([target])
        await scrapes.next()
        same = await scrapes.next()  # the same series again: known to the cache
        assert same.layout is not None and stale_names(same) == set()
        exporter.payload = 'a{x="2"} 1\nb 2\nb 2\n'
        changed = await scrapes.next()
        markers = [(s.name, s.labels) for s in changed.with_synthetic() if is_stale_marker(s.value)]
        assert markers == [("a", (("x", "1"),))]
        exporter.payload = 'a{x="2"} 3\n'
        gone = await scrapes.next()
        markers = [(s.name, s.labels) for s in gone.with_synthetic() if is_stale_marker(s.value)]
        assert markers == [("b", ())]  # a duplicated line is marked once
        again = await scrapes.next()
        assert stale_names(again) == set()
        assert [(s.name, s.value) for s in again.samples] == [("a", 3.0)]


async def test_a_failed_scrape_marks_every_series_stale_once_and_the_status_shows_why(
    exporter: ChangingExporter,
) -> None:
    scrapes = Recorder()
    target = Target(1, "web-1", exporter.url, INTERVAL, INTERVAL, {"env": "prod"})
    async with Scraper([scrapes], body_size_limit=1 << 20, sample_limit=100, job="node") as scraper:
        await scraper.sync([target])
        await scrapes.next()
        [status] = scraper.target_status()
        assert status.health == "up" and status.samples == 2
        exporter.status = 503
        failed = await scrapes.next()
        assert not failed.up
        assert stale_names(failed) == {"a", "b"}
        up = next(s for s in failed.with_synthetic() if s.name == "up")
        assert up.value == 0.0  # the synthetic series are written, not marked
        again = await scrapes.next()
        assert stale_names(again) == set()
        [status] = scraper.target_status()
    assert status.health == "down"
    assert status.last_error == "server returned HTTP status 503 Service Unavailable"
    assert status.labels == {"env": "prod", "instance": target.instance, "job": "node"}
    assert status.last_scrape is not None and status.last_duration is not None
    body = status.as_json()
    assert body["health"] == "down"
    assert body["last_scrape"].endswith("Z")


async def test_a_removed_target_ends_its_series_and_the_synthetic_ones(
    exporter: ChangingExporter,
) -> None:
    scrapes, stored = Recorder(), Recorder()
    target = Target(1, "web-1", exporter.url, INTERVAL, INTERVAL)
    async with Scraper(
        [scrapes], on_store=[stored], body_size_limit=1 << 20, sample_limit=100
    ) as scraper:
        await scraper.sync([target])
        await scrapes.next()
        await scraper.sync([])
        assert scraper.target_status() == []
    [end] = stored.results
    assert end.kind == "end"
    assert stale_names(end) == {"a", "b", "up", "scrape_duration_seconds", "scrape_samples_scraped"}
    assert all(s.name not in {"up"} or is_stale_marker(s.value) for s in end.with_synthetic())


async def test_a_changed_target_keeps_its_series_and_writes_no_markers(
    exporter: ChangingExporter,
) -> None:
    scrapes, stored = Recorder(), Recorder()
    target = Target(1, "web-1", exporter.url, INTERVAL, INTERVAL)
    async with Scraper(
        [scrapes], on_store=[stored], body_size_limit=1 << 20, sample_limit=100
    ) as scraper:
        await scraper.sync([target])
        await scrapes.next()
        await scraper.sync([Target(1, "renamed", exporter.url, INTERVAL, INTERVAL)])
        after = await scrapes.next()
    assert stored.results == []
    assert stale_names(after) == set()
    assert after.target.name == "renamed"


async def test_the_writer_stores_the_stale_marker_bit_for_bit(pool: asyncpg.Pool) -> None:
    server_id = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('w', 'http://127.0.0.1:1/metrics') RETURNING id"
    )
    target = Target(server_id, "w", "http://127.0.0.1:1/metrics", 15.0, 10.0)
    writer = SampleWriter(pool, "vpsmon")
    await writer.append(ScrapeResult(target, 1_700_000_000.0, 0.1, [Sample("a", (), 1.0)]))
    await writer.append(ScrapeResult(target, 1_700_000_015.0, 0.1, [], stale=[("a", ())]))
    await writer.append(
        ScrapeResult(target, 1_699_999_990.0, 0.0, [Sample("a", (), 0.5)], kind="backfill")
    )
    assert await writer.flush()
    rows = await pool.fetch(
        "SELECT s.ts, s.value FROM samples s JOIN series r ON r.id = s.series_id"
        " WHERE r.metric = 'a' ORDER BY s.ts"
    )
    values = [r["value"] for r in rows]
    assert values[:2] == [0.5, 1.0]
    assert is_stale_marker(values[2]), STALE_NAN
    # a backfilled instant writes no synthetic series and does not move last_seen_at back
    ups = await pool.fetchval(
        "SELECT count(*) FROM samples s JOIN series r ON r.id = s.series_id WHERE r.metric = 'up'"
    )
    assert ups == 2
    last_seen = await pool.fetchval("SELECT last_seen_at FROM servers WHERE id = $1", server_id)
    assert last_seen == datetime.fromtimestamp(1_700_000_015.0, UTC)


def test_the_spool_keeps_the_stale_marker_bits_and_that_a_backfill_is_not_a_scrape() -> None:
    from vpsmon.collector.storage.spool import StoredScrape, decode, encode

    stored = StoredScrape(
        1, "http://a/metrics", 1.0, None, (("job", "x"),), (Sample("a", (), STALE_NAN),), False
    )
    again = decode(encode(stored))
    assert is_stale_marker(again.samples[0].value)
    assert again.status is False
    assert decode(encode(dataclasses.replace(stored, status=True))).status is True


async def test_the_head_window_takes_backfilled_samples_without_changing_the_live_state() -> None:
    from vpsmon.collector.head import Head

    head = Head()
    target = Target(3, "w", "http://127.0.0.1:1/metrics", 15.0, 10.0)
    await head.append(ScrapeResult(target, 100.0, 0.1, [Sample("a", (), 1.0)]))
    await head.append(ScrapeResult(target, 95.0, 0.0, [Sample("a", (), 0.5)], kind="backfill"))
    await head.append(ScrapeResult(target, 110.0, 0.0, [], stale=[("a", ())], kind="end"))
    state = head.state(3)
    assert state is not None and state.last_scrape == 100.0 and state.up
    assert head.recent.covered_from() == 100.0
