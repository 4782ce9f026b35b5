"""The TimescaleDB layout of the sample store: choosing it, and the sample store's checks
(write, read, compression, rollups, late rows, retention) run against it.

The checks against TimescaleDB need a PostgreSQL server with the extension (Timescale License
build, in shared_preload_libraries) at VPSMON_TEST_TIMESCALEDB_URL; CI has none, so they skip
there too: the one storage test allowed to skip under CI (docs/storage.md, "TimescaleDB").
The choice of layout on a server without the extension runs everywhere.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.collector import test_compaction_edges as edges
from tests.collector.test_sample_store import (
    DAY0,
    HOUR,
    add_target,
    counter_at,
    name_is,
    read_all,
    scrapes,
    write,
)
from tests.conftest import DatabaseServer
from vpsmon.collector.config import load_config
from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.storage.chart import ChartReader
from vpsmon.collector.storage.db import connect_pool
from vpsmon.collector.storage.maintenance import Retention, ensure_partitions, maintain
from vpsmon.collector.storage.migrate import migrate
from vpsmon.collector.storage.query import STALE_NAN, is_stale_marker
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.collector.storage.timescale import (
    StorageLayoutError,
    layout,
    parse_mode,
    pause_policies,
    prepare,
    probe,
)
from vpsmon.collector.storage.writer import SampleWriter

TIMESCALEDB_URL = os.environ.get("VPSMON_TEST_TIMESCALEDB_URL")
SKIP_REASON = (
    "VPSMON_TEST_TIMESCALEDB_URL is not set: these checks need PostgreSQL with the TimescaleDB"
    " extension (Timescale License build, preloaded), which CI does not have; the one storage"
    " test allowed to skip, also under CI=true (docs/storage.md, TimescaleDB)"
)


@pytest.fixture(scope="module")
def timescale_server() -> AsyncIterator[DatabaseServer]:
    if not TIMESCALEDB_URL:
        pytest.skip(SKIP_REASON)  # not require(): CI cannot have TimescaleDB
    server = DatabaseServer(TIMESCALEDB_URL)
    yield server  # type: ignore[misc]
    import asyncio

    asyncio.run(server.drop_all())


@pytest.fixture
async def ts_url(timescale_server: DatabaseServer) -> str:
    return await timescale_server.create()


async def _paused(pool: asyncpg.Pool) -> None:
    # The policies work on the real clock; these tests write January 2026 and move `now`.
    async with pool.acquire() as conn:
        assert await pause_policies(conn) == 3


@pytest.fixture
async def ts_pool(ts_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(ts_url)
    try:
        await migrate(pool)
        assert await prepare(pool, "on", Retention()) == "timescaledb"
        await _paused(pool)
        yield pool
    finally:
        await pool.close()


# --- the setting, and the choice on any server (runs everywhere) -----------------------------


def test_the_setting_takes_auto_on_off_and_yaml_booleans(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert load_config(None, env={}).storage_timescaledb == "off"
    assert parse_mode("ON") == "on" and parse_mode(True) == "on" and parse_mode(False) == "off"
    path = tmp_path / "collector.yml"
    path.write_text("storage:\n  timescaledb: on\n")  # YAML reads a bare on as true
    assert load_config(path, env={}).storage_timescaledb == "on"
    env = {"VPSMON_STORAGE_TIMESCALEDB": "on"}
    assert load_config(None, env=env).storage_timescaledb == "on"
    with pytest.raises(Exception, match="expected auto, on or off"):
        load_config(None, env={"VPSMON_STORAGE_TIMESCALEDB": "maybe"})


async def test_the_layout_follows_what_the_server_offers(pool: asyncpg.Pool) -> None:
    """On the ordinary test server: auto and off keep the plain layout unless TimescaleDB is
    usable; on without it fails with the reason and changes nothing."""
    async with pool.acquire() as conn:
        support = await probe(conn, install=False)
    assert await prepare(pool, "off", Retention()) == "plain"
    if support.usable:  # a server with TimescaleDB: auto takes it on an empty store
        assert await prepare(pool, "auto", Retention()) == "timescaledb"
        return
    assert support.reason
    assert await prepare(pool, "auto", Retention()) == "plain"
    with pytest.raises(StorageLayoutError, match="storage.timescaledb is on, but") as err:
        await prepare(pool, "on", Retention())
    assert support.reason in str(err.value)
    async with pool.acquire() as conn:
        assert await layout(conn) == "plain"
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
            == 0
        )
        assert await ensure_partitions(conn, DAY0)  # the plain layout goes on as before


# --- against TimescaleDB ---------------------------------------------------------------------


async def test_a_fresh_store_becomes_hypertables_with_compression_and_policies(
    ts_url: str,
) -> None:
    pool = await connect_pool(ts_url)
    try:
        await migrate(pool)
        retention = Retention(raw=3 * 86400, rollup_1m=30 * 86400, rollup_1h=400 * 86400)
        assert await prepare(pool, "auto", retention) == "timescaledb"
        hypertables = {
            r["hypertable_name"]: r["compression_enabled"]
            for r in await pool.fetch(
                "SELECT hypertable_name, compression_enabled"
                " FROM timescaledb_information.hypertables"
            )
        }
        assert hypertables == {"samples": True, "rollup_1m": False, "rollup_1h": False}
        settings = await pool.fetchrow(
            "SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings"
            " WHERE hypertable = 'samples'::regclass"
        )
        assert (settings["segmentby"], settings["orderby"]) == ("series_id", "ts")
        interval = await pool.fetchval(
            "SELECT time_interval FROM timescaledb_information.dimensions"
            " WHERE hypertable_name = 'samples'"
        )
        assert interval.total_seconds() == 3600
        policies = "SELECT hypertable_name, config->>'drop_after' AS after"
        policies += " FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
        got = {r["hypertable_name"]: r["after"] for r in await pool.fetch(policies)}
        assert got == {"samples": "3 days", "rollup_1m": "30 days", "rollup_1h": "400 days"}
        # A restart with other retention replaces the policies; off cannot convert back.
        assert await prepare(pool, "on", Retention()) == "timescaledb"
        got = {r["hypertable_name"]: r["after"] for r in await pool.fetch(policies)}
        assert got == {"samples": "15 days", "rollup_1m": "90 days", "rollup_1h": "730 days"}
        assert await prepare(pool, "off", Retention()) == "timescaledb"
        async with pool.acquire() as conn:
            assert await ensure_partitions(conn, DAY0) == []
    finally:
        await pool.close()


async def test_closed_hours_are_rolled_up_compressed_and_read_back_unchanged(
    ts_pool: asyncpg.Pool,
) -> None:
    pool = ts_pool
    target = await add_target(pool)
    await write(pool, scrapes(target, DAY0, 720))  # three hours
    before = await read_all(pool, DAY0, DAY0 + 3 * HOUR)
    assert len(before["node_load1"]) == 720
    assert before["node_load1"][1][0] == DAY0 + 15.001  # milliseconds survive

    report = await maintain(pool, DAY0 + 3 * HOUR + 700)
    assert report.compacted == [DAY0, DAY0 + HOUR, DAY0 + 2 * HOUR]
    chunks = await pool.fetch(
        "SELECT range_start, is_compressed FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'samples' ORDER BY range_start"
    )
    assert [(c["range_start"].timestamp(), c["is_compressed"]) for c in chunks] == [
        (DAY0, True),
        (DAY0 + HOUR, True),
        (DAY0 + 2 * HOUR, True),
    ]
    assert await pool.fetchval("SELECT count(*) FROM sample_chunks") == 0
    assert (
        await pool.fetchval("SELECT count(*) FROM rollup_1m") == 3 * 6
    )  # 3 + up, duration, samples
    assert await read_all(pool, DAY0, DAY0 + 3 * HOUR) == before
    part = await read_all(pool, DAY0 + 30.001, DAY0 + HOUR + 15.001)
    assert part["node_load1"][0][0] == DAY0 + 30.002
    assert part["node_load1"][-1][0] == DAY0 + HOUR + 15.001
    assert len(part["node_load1"]) == 240
    reader = StorageReader(pool)
    assert await reader.series(name_is("node_load1"), DAY0 - 100, DAY0 - 1) == []
    assert len(await reader.series(name_is("node_load1"), DAY0 + 100, DAY0 + 200)) == 1
    # A second step has nothing to do.
    again = await maintain(pool, DAY0 + 3 * HOUR + 800)
    assert again.compacted == again.late_merged == []


async def test_rollups_give_the_same_chart_as_the_raw_samples(ts_pool: asyncpg.Pool) -> None:
    pool = ts_pool
    target = await add_target(pool)
    await write(pool, scrapes(target, DAY0, 24 * 240 + 480))  # a day and two hours
    end = DAY0 + 26 * HOUR
    charts = ChartReader(StorageReader(pool))
    metric = name_is("node_network_receive_bytes_total")
    raw_1m = await charts.chart(metric, DAY0, end, points=26 * 60, now=end)
    raw_1h = await charts.chart(metric, DAY0, end, points=26, now=end)
    odd = (DAY0 + 1830, end - 600)
    raw_odd = await charts.chart(metric, *odd, points=110, now=end)

    report = await maintain(pool, end + 700)
    assert len(report.compacted) == 26
    assert report.days == [DAY0]
    rolled_1m = await charts.chart(metric, DAY0, end, points=26 * 60, now=end)
    rolled_1h = await charts.chart(metric, DAY0, end, points=26, now=end)
    rolled_odd = await charts.chart(metric, *odd, points=110, now=end)
    assert (rolled_1m.resolution, rolled_1h.resolution, rolled_odd.resolution) == (
        "1m",
        "1h",
        "1m",
    )
    for raw, rolled, skip in (
        (raw_1m, rolled_1m, 0),
        (raw_1h, rolled_1h, 0),
        (raw_odd, rolled_odd, 1),
    ):
        a, b = raw.series[0].buckets, rolled.series[0].buckets
        assert b.timestamps == a.timestamps
        assert b.min[skip:] == a.min[skip:] and b.max[skip:] == a.max[skip:]
        assert b.last == a.last
        assert b.avg[skip:] == pytest.approx(a.avg[skip:])
        assert b.increase[skip:] == pytest.approx(a.increase[skip:])
    total = sum(rolled_1h.series[0].buckets.increase)
    expected = (counter_at(499) - counter_at(0)) + sum(
        counter_at(i) - counter_at(i - 1) if i != 500 else counter_at(500)
        for i in range(500, 24 * 240 + 480)
    )
    assert total == pytest.approx(expected)


async def test_late_rows_into_compressed_hours_are_stored_once_and_rolled_up_again(
    ts_pool: asyncpg.Pool,
) -> None:
    pool = ts_pool
    target = await add_target(pool)
    results = scrapes(target, DAY0, 480)
    # Every other scrape of the first hour arrives late (a spool replay), some of them twice,
    # after the hour was rolled up and compressed; and one arrives in an hour with no chunk.
    await write(pool, results[:240:2] + results[240:])
    await maintain(pool, DAY0 + 2 * HOUR + 700)
    minutes = "SELECT sum(c) FROM rollup_1m, unnest(counts) c WHERE block_start = $1"
    # Six series (with up and the scrape's two), four scrapes a minute of which two arrived.
    assert await pool.fetchval(minutes, datetime_of(DAY0)) == 6 * 120
    await write(pool, results[1:240:2])
    await write(pool, results[1:100:2])
    early = ScrapeResult(target, DAY0 - HOUR, 0.01, [Sample("node_load1", (), 7.0)])
    await write(pool, [early])
    assert len((await read_all(pool, DAY0, DAY0 + HOUR - 1))["node_load1"]) == 240

    report = await maintain(pool, DAY0 + 2 * HOUR + 800)
    assert report.late_merged == [DAY0 - HOUR, DAY0]
    assert await pool.fetchval(minutes, datetime_of(DAY0)) == 6 * 240
    assert await pool.fetchval(minutes, datetime_of(DAY0 - HOUR)) == 4
    got = await read_all(pool, DAY0, DAY0 + HOUR - 1)
    assert [t for t, _ in got["node_load1"]] == [r.timestamp for r in results[:240]]
    assert [v for _, v in got["node_load1"]] == [0.25 * (i % 11) for i in range(240)]
    whole = await pool.fetchval(
        "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'samples'"
    )
    assert whole
    # The counter's increase over both hours has no hole and nothing twice.
    chart = await ChartReader(StorageReader(pool)).chart(
        name_is("node_network_receive_bytes_total"),
        DAY0,
        DAY0 + 2 * HOUR,
        points=120,
        now=DAY0 + 3 * HOUR,
    )
    assert chart.resolution == "1m"
    assert sum(chart.series[0].buckets.increase) == pytest.approx(counter_at(479) - counter_at(0))


def datetime_of(seconds: float):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC)


async def test_staleness_markers_survive_compression(ts_pool: asyncpg.Pool) -> None:
    pool = ts_pool
    target = await add_target(pool)
    await write(
        pool,
        [
            ScrapeResult(target, DAY0, 0.1, [Sample("node_load1", (), 1.0)]),
            ScrapeResult(target, DAY0 + 15, 0.1, [Sample("node_load1", (), STALE_NAN)]),
        ],
    )
    await maintain(pool, DAY0 + HOUR + 700)
    values = (await read_all(pool, DAY0, DAY0 + 60))["node_load1"]
    assert values[0] == (DAY0, 1.0)
    assert is_stale_marker(values[1][1])
    chart = await ChartReader(StorageReader(pool)).chart(
        name_is("node_load1"), DAY0, DAY0 + 3600, points=60, now=DAY0 + 3600
    )
    assert chart.series[0].buckets.max == [1.0]


async def test_retention_drops_each_resolution_after_its_own_time(ts_pool: asyncpg.Pool) -> None:
    pool = ts_pool
    target = await add_target(pool)
    await write(pool, scrapes(target, DAY0, 240))
    retention = Retention(raw=2 * 86400, rollup_1m=5 * 86400, rollup_1h=9 * 86400)
    await maintain(pool, DAY0 + 86400 + 700, retention)
    counts = "SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM rollup_1m),"
    counts += " (SELECT count(*) FROM rollup_1h)"
    assert tuple(await pool.fetchrow(counts)) == (1440, 6, 6)
    report = await maintain(pool, DAY0 + 3 * 86400, retention)
    assert len(report.dropped_chunks) == 1  # the raw hour, dropped whole
    assert tuple(await pool.fetchrow(counts)) == (0, 6, 6)
    chart = await ChartReader(StorageReader(pool), retention).chart(
        name_is("node_load1"), DAY0, DAY0 + 3600, points=240, now=DAY0 + 3 * 86400
    )
    assert chart.resolution == "1m" and len(chart.series[0].buckets.timestamps) == 60
    await maintain(pool, DAY0 + 6 * 86400, retention)
    assert tuple(await pool.fetchrow(counts)) == (0, 0, 6)
    await maintain(pool, DAY0 + 10 * 86400, retention)
    assert tuple(await pool.fetchrow(counts)) == (0, 0, 0)


async def test_on_converts_a_plain_store_keeping_every_sample_and_auto_does_not(
    ts_url: str,
) -> None:
    pool = await connect_pool(ts_url)
    try:
        await migrate(pool)
        assert await prepare(pool, "off", Retention()) == "plain"
        target = await add_target(pool)
        await write(pool, scrapes(target, DAY0, 480))
        await maintain(pool, DAY0 + HOUR + 700)  # the first hour in chunks, the second raw
        assert await pool.fetchval("SELECT count(*) FROM sample_chunks") == 6
        before = await read_all(pool, DAY0, DAY0 + 2 * HOUR)
        assert await prepare(pool, "auto", Retention()) == "plain"  # never behind your back
        assert await prepare(pool, "on", Retention()) == "timescaledb"
        await _paused(pool)
        assert await pool.fetchval("SELECT count(*) FROM samples") == 6 * 480
        assert await read_all(pool, DAY0, DAY0 + 2 * HOUR) == before
        report = await maintain(pool, DAY0 + 2 * HOUR + 700)
        # The first hour is rolled up again (its chunk is new), the second for the first time.
        assert sorted(report.late_merged + report.compacted) == [DAY0, DAY0 + HOUR]
        assert await read_all(pool, DAY0, DAY0 + 2 * HOUR) == before
        await write(pool, scrapes(target, DAY0, 4, first=480))
        assert len((await read_all(pool, DAY0, DAY0 + 3 * HOUR))["node_load1"]) == 484
    finally:
        await pool.close()


async def test_a_rule_output_rewritten_into_a_compressed_hour_keeps_the_later_value(
    ts_pool: asyncpg.Pool,
) -> None:
    pool = ts_pool
    writer = SampleWriter(pool, "node")
    labels = (("job", "node"),)
    await writer.append_series([("job:load:avg", labels, DAY0 + 60 * i, 1.0) for i in range(60)])
    assert await writer.flush()
    await maintain(pool, DAY0 + HOUR + 700)
    assert await pool.fetchval(
        "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'samples'"
    )
    # A rule re-evaluated after a restart writes the same timestamps again: the later wins.
    await writer.append_series([("job:load:avg", labels, DAY0 + 60 * i, 2.0) for i in range(30)])
    assert await writer.flush()
    got = await StorageReader(pool).select(name_is("job:load:avg"), DAY0, DAY0 + HOUR)
    assert got[0].values == [2.0] * 30 + [1.0] * 30
    report = await maintain(pool, DAY0 + HOUR + 800)
    assert report.late_merged == [DAY0]
    sums = "SELECT sum(s) FROM rollup_1m, unnest(sums) s WHERE block_start = $1"
    assert await pool.fetchval(sums, datetime_of(DAY0)) == 90.0


async def test_a_late_row_at_the_end_of_a_day_is_counted_once_in_both_days_rollups(
    ts_pool: asyncpg.Pool,
) -> None:
    # The plain layout's case (test_compaction_edges.py): the next hour's first increase is
    # rebuilt from the late row, in the next day's hourly rollup too.
    pool = ts_pool
    target = await add_target(pool)
    first = DAY0 + 23 * HOUR
    times = [first + 60 * i for i in range(120)]
    await edges.write(pool, edges.counter_scrapes(target, times[:59] + times[60:]))
    report = await maintain(pool, DAY0 + 2 * 86400 + 700)
    assert report.days == [DAY0, DAY0 + 86400]
    await edges.write(pool, edges.counter_scrapes(target, [times[59]]))
    report = await maintain(pool, DAY0 + 2 * 86400 + 800)
    assert report.late_merged == [first]
    assert await edges.rollup_increase(pool, "rollup_1m") == pytest.approx(10 * 119)
    assert await edges.rollup_increase(pool, "rollup_1h") == pytest.approx(10 * 119)


async def test_hourly_rollups_of_a_day_stay_until_the_whole_day_is_past_retention(
    ts_pool: asyncpg.Pool,
) -> None:
    pool = ts_pool
    target = await add_target(pool)
    await edges.write(pool, edges.counter_scrapes(target, [DAY0 + 600 * i for i in range(144)]))
    retention = Retention(raw=86400, rollup_1m=86400, rollup_1h=2 * 86400)
    report = await maintain(pool, DAY0 + 86400 + 700, retention)
    assert report.days == [DAY0]
    await maintain(pool, DAY0 + 2 * 86400 + 12 * HOUR, retention)
    assert await pool.fetchval("SELECT count(DISTINCT day) FROM rollup_1h") == 1
    await maintain(pool, DAY0 + 3 * 86400, retention)
    assert await pool.fetchval("SELECT count(DISTINCT day) FROM rollup_1h") == 0
