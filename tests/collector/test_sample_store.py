"""The sample store: partitions, compaction into chunks, rollups, late rows, retention, and the
upgrade of a database holding data in the 001 tables. Real PostgreSQL throughout."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.collector.storage import maintenance
from vpsmon.collector.storage.chart import ChartReader
from vpsmon.collector.storage.db import connect_pool
from vpsmon.collector.storage.maintenance import Retention, maintain, partition_name
from vpsmon.collector.storage.migrate import available, migrate
from vpsmon.collector.storage.query import STALE_NAN, Matcher, is_stale_marker
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.collector.storage.store import FIGURES, Buckets, Figure, RollupCache
from vpsmon.collector.storage.writer import SampleWriter

DAY0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600.0


def name_is(metric: str) -> list[Matcher]:
    return [Matcher("__name__", "=", metric)]


async def add_target(pool: asyncpg.Pool, host: str = "10.0.0.1") -> Target:
    url = f"http://{host}:9190/metrics"
    server_id = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ($1, $2) RETURNING id", host, url
    )
    return Target(server_id, host, url, 15.0, 10.0, {})


def counter_at(i: int) -> float:
    # A counter that restarts from zero at scrape 500 (a reboot).
    return float(i * 10 + (i % 7)) if i < 500 else float((i - 500) * 10)


def scrapes(target: Target, start: float, count: int, first: int = 0) -> list[ScrapeResult]:
    out = []
    for i in range(first, first + count):
        ts = start + 15 * i + (i % 3) * 0.001  # millisecond jitter, as real scrapes have
        samples = [
            Sample("node_load1", (), 0.25 * (i % 11)),
            Sample("node_network_receive_bytes_total", (("device", "eth0"),), counter_at(i)),
            Sample("node_boot_time_seconds", (), 1_700_000_000.0),
        ]
        out.append(ScrapeResult(target, ts, 0.01, samples))
    return out


async def write(pool: asyncpg.Pool, results: list[ScrapeResult]) -> None:
    writer = SampleWriter(pool, "node")
    for result in results:
        await writer.append(result)
    assert await writer.flush()


async def read_all(pool: asyncpg.Pool, start: float, end: float) -> dict[str, list[tuple]]:
    got = await StorageReader(pool).select([Matcher("job", "=", "node")], start, end)
    return {s.labels["__name__"]: list(zip(s.timestamps, s.values, strict=True)) for s in got}


async def test_closed_hours_are_compacted_and_read_back_unchanged(pool: asyncpg.Pool) -> None:
    target = await add_target(pool)
    await maintenance.ensure_partitions(pool_conn := await pool.acquire(), DAY0)
    await pool.release(pool_conn)
    await write(pool, scrapes(target, DAY0, 720))  # three hours
    before = await read_all(pool, DAY0, DAY0 + 3 * HOUR)
    assert len(before["node_load1"]) == 720
    assert before["node_load1"][1][0] == DAY0 + 15.001  # milliseconds survive

    report = await maintain(pool, DAY0 + 3 * HOUR + 700)
    assert report.compacted == [DAY0, DAY0 + HOUR, DAY0 + 2 * HOUR]
    assert await pool.fetchval("SELECT count(*) FROM samples") == 0
    assert await pool.fetchval("SELECT count(*) FROM sample_chunks") == 3 * 6
    names = {r["relname"] for r in await pool.fetch("SELECT relname FROM pg_class")}
    assert partition_name(DAY0) not in names
    assert partition_name(DAY0 + 3 * HOUR) in names  # the current hour and those ahead

    assert await read_all(pool, DAY0, DAY0 + 3 * HOUR) == before
    # Ranges cutting through chunks, inclusive at both ends.
    part = await read_all(pool, DAY0 + 30.001, DAY0 + HOUR + 15.001)
    assert part["node_load1"][0][0] == DAY0 + 30.002
    assert part["node_load1"][-1][0] == DAY0 + HOUR + 15.001
    assert len(part["node_load1"]) == 240  # scrapes 2 to 241

    reader = StorageReader(pool)
    # As Prometheus' block index: a series counts if a chunk overlaps the range.
    assert await reader.series(name_is("node_load1"), DAY0 - 100, DAY0 - 1) == []
    assert len(await reader.series(name_is("node_load1"), DAY0 + 100, DAY0 + 200)) == 1


async def test_rollups_give_the_same_chart_as_the_raw_samples(pool: asyncpg.Pool) -> None:
    target = await add_target(pool)
    await write(pool, scrapes(target, DAY0, 24 * 240 + 480))  # a day and two hours
    end = DAY0 + 26 * HOUR
    charts = ChartReader(StorageReader(pool))
    metric = name_is("node_network_receive_bytes_total")
    raw_1m = await charts.chart(metric, DAY0, end, points=26 * 60, now=end)
    raw_1h = await charts.chart(metric, DAY0, end, points=26, now=end)
    assert raw_1m.step == 60 and raw_1h.step == 3600
    # A range starting mid-hour with 15-minute buckets folds partial rows entry by entry.
    odd = (DAY0 + 1830, end - 600)
    raw_odd = await charts.chart(metric, *odd, points=110, now=end)
    assert raw_odd.step == 900

    report = await maintain(pool, end + 700)
    assert len(report.compacted) + len(report.late_merged) == 26
    assert report.days == [DAY0]
    rolled_1m = await charts.chart(metric, DAY0, end, points=26 * 60, now=end)
    rolled_1h = await charts.chart(metric, DAY0, end, points=26, now=end)
    rolled_odd = await charts.chart(metric, *odd, points=110, now=end)
    assert rolled_odd.resolution == "1m"
    # (Rollups are whole minutes: the odd chart's first, partial minute is not comparable.)
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
        # The raw chart has no sample before its start; the rollups know none either.
        assert b.increase[skip:] == pytest.approx(a.increase[skip:])
    total = sum(rolled_1h.series[0].buckets.increase)
    # 10 per scrape, the restart at 500 counted from zero: no hole at hour or day boundaries.
    expected = (counter_at(499) - counter_at(0)) + sum(
        counter_at(i) - counter_at(i - 1) if i != 500 else counter_at(500)
        for i in range(500, 24 * 240 + 480)
    )
    assert total == pytest.approx(expected)


async def test_a_chart_mixing_whole_rollup_rows_gappy_rows_and_raw_rows_matches_the_raw_one(
    pool: asyncpg.Pool,
) -> None:
    target = await add_target(pool)
    # Five hours; ten minutes missing in the third (its rollup row has a hole, so it is folded
    # entry by entry between whole rows); the fifth hour stays raw.
    results = scrapes(target, DAY0, 5 * 240)
    await write(pool, results[: 480 + 40] + results[480 + 80 :])
    start, end = DAY0 + 1830, DAY0 + 5 * HOUR - 15
    charts = ChartReader(StorageReader(pool))
    metric = name_is("node_network_receive_bytes_total")
    raw = await charts.chart(metric, start, end, points=140, now=end)
    assert raw.step == 120

    report = await maintain(pool, DAY0 + 4 * HOUR + 700)
    assert len(report.compacted) + len(report.late_merged) == 4
    rolled = await charts.chart(metric, start, end, points=140, now=end)
    assert rolled.resolution == "1m"
    a, b = raw.series[0].buckets, rolled.series[0].buckets
    assert b.timestamps == a.timestamps
    assert DAY0 + 2 * HOUR + 600 not in b.timestamps  # the hole stays a hole
    # (The first bucket starts mid-minute: rollups cannot split a minute.)
    assert b.min[1:] == a.min[1:] and b.max[1:] == a.max[1:]
    assert b.last == a.last
    assert b.avg[1:] == pytest.approx(a.avg[1:])
    assert b.increase[1:] == pytest.approx(a.increase[1:])


async def test_a_chart_asking_for_some_figures_gets_those_unchanged_and_no_others(
    pool: asyncpg.Pool,
) -> None:
    target = await add_target(pool)
    # As above: whole rollup rows, a gappy row folded entry by entry, the newest hour raw.
    results = scrapes(target, DAY0, 5 * 240)
    await write(pool, results[: 480 + 40] + results[480 + 80 :])
    await maintain(pool, DAY0 + 4 * HOUR + 700)
    charts = ChartReader(StorageReader(pool))
    metrics = [Matcher("__name__", "=~", "node_load1|node_network_receive_bytes_total")]
    wanted: dict[str, frozenset[Figure]] = {
        "node_load1": frozenset(("avg",)),
        "node_network_receive_bytes_total": frozenset(("last", "increase")),
    }
    for start, points in ((DAY0 + 1830, 140), (DAY0, 300)):  # 2-minute and 1-minute steps
        end = DAY0 + 5 * HOUR - 15
        every = await charts.chart(metrics, start, end, points=points, now=end)
        some = await charts.chart(
            metrics, start, end, points=points, now=end, figures=lambda la: wanted[la["__name__"]]
        )
        assert some.resolution == every.resolution == "1m"
        assert len(some.series) == len(every.series) == 2
        for full, part in zip(every.series, some.series, strict=True):
            a, b = full.buckets, part.buckets
            assert b.timestamps == a.timestamps
            for figure in FIGURES:
                asked = figure in wanted[part.labels["__name__"]]
                assert getattr(b, figure) == (getattr(a, figure) if asked else []), figure


async def test_late_rows_merge_into_their_compacted_hour_exactly_once(pool: asyncpg.Pool) -> None:
    target = await add_target(pool)
    results = scrapes(target, DAY0, 240)
    # Every other scrape arrives late (a spool replay), some of them twice.
    await write(pool, results[::2])
    await maintain(pool, DAY0 + HOUR + 700)
    await write(pool, results[1::2])
    await write(pool, results[1:100:2])
    assert await pool.fetchval("SELECT count(*) FROM samples_default") > 0
    assert len((await read_all(pool, DAY0, DAY0 + HOUR))["node_load1"]) == 240  # read merged

    report = await maintain(pool, DAY0 + HOUR + 800)
    assert report.late_merged == [DAY0]
    assert await pool.fetchval("SELECT count(*) FROM samples") == 0
    got = await read_all(pool, DAY0, DAY0 + HOUR)
    assert [t for t, _ in got["node_load1"]] == [r.timestamp for r in results]
    assert [v for _, v in got["node_load1"]] == [0.25 * (i % 11) for i in range(240)]


async def test_a_cached_chart_equals_the_uncached_one_and_sees_rewritten_rollup_rows(
    pool: asyncpg.Pool,
) -> None:
    target = await add_target(pool)
    results = scrapes(target, DAY0, 4 * 240)
    # The second hour's odd scrapes come late, after their hour was compacted.
    await write(pool, results[:240] + results[240:480:2] + results[480:])
    await maintain(pool, DAY0 + 4 * HOUR + 700)
    cache = RollupCache()
    plain, cached = ChartReader(StorageReader(pool)), ChartReader(StorageReader(pool), cache=cache)
    metrics = [Matcher("__name__", "=~", "node_load1|node_network_receive_bytes_total")]
    end = DAY0 + 4 * HOUR

    async def charts(start: float) -> tuple[list[Buckets], list[Buckets], list[Buckets]]:
        got = []
        for reader in (plain, cached, cached):  # uncached, filling the cache, from the cache
            chart = await reader.chart(metrics, start, end, points=120, now=end)
            assert chart.resolution == "1m" and chart.step == 120
            got.append([s.buckets for s in chart.series])
        return got[0], got[1], got[2]

    for start in (DAY0, DAY0 + 1830):  # whole hours; a partial first hour
        a, b, c = await charts(start)
        assert a == b == c
    assert len(cache) == 2 * 4 and cache.hits >= 2 * 4
    before = [
        s.buckets for s in (await plain.chart(metrics, DAY0, end, points=120, now=end)).series
    ]

    await write(pool, results[241:480:2])
    assert (await maintain(pool, end + 800)).late_merged == [DAY0 + HOUR]
    a, b, c = await charts(DAY0)
    assert a == b == c  # the rewritten rows were read again, not served from the cache
    assert a != before


async def test_staleness_markers_survive_compaction(pool: asyncpg.Pool) -> None:
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
    assert chart.series[0].buckets.max == [1.0]  # NaN is left out of the figures


async def test_retention_deletes_each_resolution_after_its_own_time(pool: asyncpg.Pool) -> None:
    target = await add_target(pool)
    await write(pool, scrapes(target, DAY0, 240))
    retention = Retention(raw=2 * 86400, rollup_1m=5 * 86400, rollup_1h=9 * 86400)
    await maintain(pool, DAY0 + 86400 + 700, retention)
    counts = "SELECT (SELECT count(*) FROM sample_chunks), (SELECT count(*) FROM rollup_1m),"
    counts += " (SELECT count(*) FROM rollup_1h)"
    assert tuple(await pool.fetchrow(counts)) == (6, 6, 6)
    await maintain(pool, DAY0 + 3 * 86400, retention)
    assert tuple(await pool.fetchrow(counts)) == (0, 6, 6)
    # Past the raw retention the chart falls back to the rollups.
    chart = await ChartReader(StorageReader(pool), retention).chart(
        name_is("node_load1"), DAY0, DAY0 + 3600, points=240, now=DAY0 + 3 * 86400
    )
    assert chart.resolution == "1m" and len(chart.series[0].buckets.timestamps) == 60
    await maintain(pool, DAY0 + 6 * 86400, retention)
    assert tuple(await pool.fetchrow(counts)) == (0, 0, 6)
    await maintain(pool, DAY0 + 10 * 86400, retention)
    assert tuple(await pool.fetchrow(counts)) == (0, 0, 0)


async def test_an_001_database_with_samples_upgrades_and_keeps_every_sample(
    database_url: str,
) -> None:
    pool = await connect_pool(database_url)
    try:
        first = available()[0]
        assert first.version == 1
        async with pool.acquire() as conn:
            await conn.execute(first.sql)
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            await conn.execute("INSERT INTO schema_migrations VALUES (1, 'initial')")
        # Samples written as the 001 writer wrote them: microseconds, spanning three hours,
        # one of them in the hour the upgrade happens in.
        sid = await pool.fetchval(
            "INSERT INTO servers (name, url) VALUES ('a', 'http://a:9190/metrics') RETURNING id"
        )
        series = await pool.fetchval(
            "INSERT INTO series (server_id, metric, labels, labels_hash)"
            " VALUES ($1, 'node_load1', '{\"job\": \"node\"}', '\\x01') RETURNING id",
            sid,
        )
        rows = [
            (series, datetime.fromtimestamp(DAY0 + 30 * i + 1e-6, UTC), float(i))
            for i in range(360)
        ]
        await pool.copy_records_to_table("samples", records=rows)

        applied = await migrate(pool)
        assert [m.version for m in applied] == [m.version for m in available()][1:]
        got = await read_all(pool, DAY0, DAY0 + 3 * HOUR)
        # Read back at Prometheus' millisecond precision.
        assert got["node_load1"] == [(DAY0 + 30 * i, float(i)) for i in range(360)]

        report = await maintain(pool, DAY0 + 2 * HOUR + 60)  # during the third hour
        assert report.late_merged == [DAY0]  # the second hour is still within its grace
        assert await pool.fetchval("SELECT count(*) FROM samples_default") == 120
        assert await read_all(pool, DAY0, DAY0 + 3 * HOUR) == got
        report = await maintain(pool, DAY0 + 2 * HOUR + 700)
        assert report.late_merged == [DAY0 + HOUR]
        assert await pool.fetchval("SELECT count(*) FROM samples_default") == 0
        current = partition_name(DAY0 + 2 * HOUR)
        assert await pool.fetchval(f"SELECT count(*) FROM {current}") == 120  # noqa: S608
        assert await read_all(pool, DAY0, DAY0 + 3 * HOUR) == got
        # and the writer goes on writing into the new layout
        target = Target(sid, "a", "http://a:9190/metrics", 15.0, 10.0, {})
        await write(pool, scrapes(target, DAY0 + 3 * HOUR, 4))
        found = await StorageReader(pool).select(name_is("node_load1"), DAY0, DAY0 + 4 * HOUR)
        assert sorted(len(s.values) for s in found) == [4, 360]
    finally:
        await pool.close()


def test_the_migrations_of_this_area_use_numbers_010_to_019() -> None:
    ours = [
        m.version
        for m in available()
        if (Path(__file__).parents[2] / "sql" / f"{m.version:03d}_{m.name}.sql")
        .read_text()
        .lstrip()
        .startswith(f"-- {m.version:03d} (storage")
    ]
    assert ours and all(10 <= v <= 19 for v in ours)
    assert math.isfinite(ours[0])
