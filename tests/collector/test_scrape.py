"""scrape_once and the Scraper against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import gzip
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import free_port
from vpsmon.collector.scrape.loop import Scraper, ScrapeResult, scrape_once
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target

GOOD_PAYLOAD = """\
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.42
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 1234.5
node_cpu_seconds_total{cpu="0",mode="user"} 56.25
"""

BODY_LIMIT = 64 * 1024
SAMPLE_LIMIT = 100


class FakeExporter:
    """A /metrics server whose routes each misbehave in one way."""

    def __init__(self) -> None:
        self.release_slow = asyncio.Event()
        self.hits = 0
        app = web.Application()
        app.router.add_get("/metrics", self.good)
        app.router.add_get("/gzip", self.gzipped)
        app.router.add_get("/error", self.error)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/garbage", self.garbage)
        app.router.add_get("/latin1", self.latin1)
        app.router.add_get("/big", self.big)
        app.router.add_get("/bomb", self.bomb)
        app.router.add_get("/many", self.many)
        self.server = TestServer(app, host="127.0.0.1")

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def good(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text=GOOD_PAYLOAD, content_type="text/plain")

    async def gzipped(self, request: web.Request) -> web.Response:
        assert "gzip" in request.headers.get("Accept-Encoding", "")
        return web.Response(
            body=gzip.compress(GOOD_PAYLOAD.encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
        )

    async def error(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="collector exploded")

    async def slow(self, request: web.Request) -> web.Response:
        await self.release_slow.wait()
        return web.Response(text=GOOD_PAYLOAD)

    async def garbage(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><body>this is { not metrics</body></html>\n")

    async def latin1(self, request: web.Request) -> web.Response:
        return web.Response(body=b'node_info{name="caf\xe9"} 1\n')

    async def big(self, request: web.Request) -> web.Response:
        line = b"# padding that is still valid exposition, a comment line\n"
        return web.Response(body=line * (BODY_LIMIT // len(line) + 10))

    async def bomb(self, request: web.Request) -> web.Response:
        body = _gzip_bomb()
        assert len(body) < BODY_LIMIT
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def many(self, request: web.Request) -> web.Response:
        lines = [f'many_total{{n="{i}"}} {i}' for i in range(SAMPLE_LIMIT + 1)]
        return web.Response(text="# TYPE many_total counter\n" + "\n".join(lines) + "\n")


@functools.cache
def _gzip_bomb() -> bytes:
    """50 MB of comment lines that inflate from a gzip body of about 50 kB.

    Compressed once, outside the request: compressing 50 MB inside the handler took most of
    the scrape's 2 s timeout on a loaded machine, so the test failed by timing out instead of
    by the size limit it is about."""
    return gzip.compress(b"#" + b" " * (50 * 1024 * 1024) + b"\n", compresslevel=9)


@pytest.fixture
async def exporter() -> AsyncIterator[FakeExporter]:
    fake = FakeExporter()
    await fake.server.start_server()
    try:
        yield fake
    finally:
        fake.release_slow.set()
        await fake.server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def target(url: str, *, timeout: float = 2.0, interval: float = 15.0) -> Target:
    return Target(1, "web-1", url, interval, timeout)


async def scrape(session: aiohttp.ClientSession, t: Target) -> ScrapeResult:
    return await scrape_once(
        session, t, 1_700_000_000.0, body_size_limit=BODY_LIMIT, sample_limit=SAMPLE_LIMIT
    )


async def test_a_good_payload_gives_samples_and_up_1(
    exporter: FakeExporter, session: aiohttp.ClientSession
) -> None:
    result = await scrape(session, target(exporter.url("/metrics")))
    assert result.error is None
    assert result.up
    assert result.timestamp == 1_700_000_000.0
    assert result.samples == [
        Sample("node_load1", (), 0.42),
        Sample("node_cpu_seconds_total", (("cpu", "0"), ("mode", "idle")), 1234.5),
        Sample("node_cpu_seconds_total", (("cpu", "0"), ("mode", "user")), 56.25),
    ]
    synthetic = {s.name: s.value for s in result.with_synthetic() if not s.labels}
    assert synthetic["up"] == 1.0
    assert synthetic["scrape_samples_scraped"] == 3.0
    assert 0 <= synthetic["scrape_duration_seconds"] < 2.0
    assert len(result.with_synthetic()) == 3 + 3


async def test_a_gzip_body_within_the_limit_is_inflated_and_parsed(
    exporter: FakeExporter, session: aiohttp.ClientSession
) -> None:
    result = await scrape(session, target(exporter.url("/gzip")))
    assert result.error is None
    assert [s.name for s in result.samples][0] == "node_load1"
    assert len(result.samples) == 3


async def test_an_http_error_status_fails_the_scrape_naming_the_status(
    exporter: FakeExporter, session: aiohttp.ClientSession
) -> None:
    result = await scrape(session, target(exporter.url("/error")))
    assert not result.up
    assert result.error is not None
    assert "HTTP status 500" in result.error
    assert result.samples == []
    up = next(s for s in result.with_synthetic() if s.name == "up")
    assert up.value == 0.0


async def test_a_target_slower_than_its_timeout_times_out(
    exporter: FakeExporter, session: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    result = await scrape(session, target(exporter.url("/slow"), timeout=0.3))
    elapsed = time.monotonic() - started
    assert result.error == "timed out after 0.3s"
    assert 0.25 <= elapsed < 2.0
    assert 0.25 <= result.duration < 2.0


async def test_a_garbage_body_is_invalid_exposition(
    exporter: FakeExporter, session: aiohttp.ClientSession
) -> None:
    result = await scrape(session, target(exporter.url("/garbage")))
    assert result.error is not None
    assert result.error.startswith("invalid exposition")
    assert result.samples == []


async def test_a_body_that_is_not_utf8_is_invalid_exposition(
    exporter: FakeExporter, session: aiohttp.ClientSession
) -> None:
    result = await scrape(session, target(exporter.url("/latin1")))
    assert result.error == "invalid exposition: body is not UTF-8"


async def test_a_body_over_the_size_limit_fails_the_scrape(
    exporter: FakeExporter, session: aiohttp.ClientSession
) -> None:
    result = await scrape(session, target(exporter.url("/big")))
    assert result.error == f"body size limit of {BODY_LIMIT} bytes exceeded"
    assert result.samples == []


async def test_a_small_gzip_body_inflating_past_the_limit_fails_the_scrape(
    exporter: FakeExporter, session: aiohttp.ClientSession
) -> None:
    _gzip_bomb()
    result = await scrape(session, target(exporter.url("/bomb"), timeout=10.0))
    assert result.error == f"body size limit of {BODY_LIMIT} bytes exceeded"


async def test_more_samples_than_the_sample_limit_fails_the_scrape(
    exporter: FakeExporter, session: aiohttp.ClientSession
) -> None:
    result = await scrape(session, target(exporter.url("/many")))
    assert result.error == f"sample limit {SAMPLE_LIMIT} exceeded"
    assert result.samples == []


async def test_a_refused_connection_is_a_connection_failure(
    session: aiohttp.ClientSession,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    result = await scrape(session, target(url))
    assert result.error is not None
    assert result.error.startswith("connection failed")
    assert not result.up


def test_the_offset_is_stable_and_within_the_interval() -> None:
    offsets = []
    for i in range(200):
        t = Target(i, f"s{i}", f"http://10.0.{i // 250}.{i % 250}:9190/metrics", 15.0, 10.0)
        again = Target(i, "renamed", t.url, 15.0, 10.0)
        assert t.offset() == again.offset()
        assert 0.0 <= t.offset() < 15.0
        offsets.append(t.offset())
    # spread: 200 targets do not pile up in one part of the interval
    assert min(offsets) < 1.5
    assert max(offsets) > 13.5
    assert len(set(offsets)) == 200


@pytest.mark.parametrize(
    ("url", "instance"),
    [
        ("http://10.0.0.5:9190/metrics", "10.0.0.5:9190"),
        ("http://web-1.example/metrics", "web-1.example:80"),
        ("https://web-1.example/metrics", "web-1.example:443"),
        ("https://web-1.example:8443/metrics", "web-1.example:8443"),
        ("http://[2001:db8::1]:9190/metrics", "[2001:db8::1]:9190"),
        ("https://[::1]/metrics", "[::1]:443"),
    ],
)
def test_the_instance_label_is_host_and_port(url: str, instance: str) -> None:
    assert Target(1, "x", url, 15.0, 10.0).instance == instance


def test_target_labels_carry_job_and_instance_and_the_servers_labels() -> None:
    t = Target(1, "x", "http://10.0.0.5:9190/metrics", 15.0, 10.0, {"env": "prod"})
    assert t.target_labels("node") == (
        ("env", "prod"),
        ("instance", "10.0.0.5:9190"),
        ("job", "node"),
    )


async def test_the_scraper_keeps_scraping_on_its_interval(exporter: FakeExporter) -> None:
    results: list[ScrapeResult] = []

    async def on_scrape(result: ScrapeResult) -> None:
        results.append(result)

    t = target(exporter.url("/metrics"), interval=0.5, timeout=0.4)
    async with Scraper(
        [on_scrape], body_size_limit=BODY_LIMIT, sample_limit=SAMPLE_LIMIT
    ) as scraper:
        await scraper.sync([t])
        assert scraper.targets == [t]
        await asyncio.sleep(2.0)
        await scraper.sync([])
        assert scraper.targets == []
        # counted after the stop (and after a request cancelled in flight could still land),
        # so a scrape due just before the stop is not taken for one after it
        await asyncio.sleep(0.1)
        hits = exporter.hits
    assert hits >= 3
    assert len(results) >= 3
    assert all(r.up and len(r.samples) == 3 for r in results)
    # one scrape per slot of the target's own grid: no bursts
    gaps = [b.timestamp - a.timestamp for a, b in zip(results, results[1:], strict=False)]
    assert all(0.4 < gap < 0.75 for gap in gaps), gaps
    # stopped targets are not scraped any more
    await asyncio.sleep(0.7)
    assert exporter.hits == hits


async def test_a_failing_consumer_does_not_stop_the_scraper(exporter: FakeExporter) -> None:
    seen: list[ScrapeResult] = []

    async def broken(result: ScrapeResult) -> None:
        raise RuntimeError("consumer bug")

    async def recorder(result: ScrapeResult) -> None:
        seen.append(result)

    t = target(exporter.url("/metrics"), interval=0.3, timeout=0.25)
    async with Scraper([broken, recorder], body_size_limit=BODY_LIMIT, sample_limit=10) as s:
        await s.sync([t])
        await asyncio.sleep(1.0)
    assert len(seen) >= 2


async def test_a_changed_target_is_restarted_with_its_new_settings(
    exporter: FakeExporter,
) -> None:
    seen: list[ScrapeResult] = []

    async def recorder(result: ScrapeResult) -> None:
        seen.append(result)

    first = target(exporter.url("/error"), interval=0.3, timeout=0.25)
    second = target(exporter.url("/metrics"), interval=0.3, timeout=0.25)
    async with Scraper([recorder], body_size_limit=BODY_LIMIT, sample_limit=10) as s:
        await s.sync([first])
        await asyncio.sleep(0.7)
        await s.sync([second])
        assert s.targets == [second]
        switched = len(seen)
        await asyncio.sleep(0.7)
    assert any(r.target == first and not r.up for r in seen[:switched])
    assert seen[switched:]
    assert all(r.target == second and r.up for r in seen[switched:])
