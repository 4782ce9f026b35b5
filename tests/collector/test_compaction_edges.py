"""Edges of compaction and rollups in the plain layout: rows that arrive after their hour was
compacted, rewritten rule outputs, hour and day boundaries, the watermark, the session time
zone and retention. Real PostgreSQL throughout; each test failed before its fix."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from tests.collector.test_sample_store import DAY0, HOUR, add_target, name_is
from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.collector.storage import maintenance
from vpsmon.collector.storage.chart import ChartReader
from vpsmon.collector.storage.maintenance import Retention, maintain
from vpsmon.collector.storage.migrate import migrate
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.collector.storage.writer import SampleWriter

DAY = 86400.0
COUNTER = "node_network_receive_bytes_total"


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def counter_scrapes(target: Target, times: list[float]) -> list[ScrapeResult]:
    """One counter growing by 10 a scrape (value = 10 * seconds / 60), one scrape a minute."""
    return [
        ScrapeResult(target, t, 0.01, [Sample(COUNTER, (("device", "eth0"),), 10 * t / 60)])
        for t in times
    ]


async def write(pool: asyncpg.Pool, results: list[ScrapeResult]) -> None:
    writer = SampleWriter(pool, "node")
    for result in results:
        await writer.append(result)
    assert await writer.flush()


async def rollup_increase(pool: asyncpg.Pool, table: str) -> float:
    column = "block_start" if table == "rollup_1m" else "day"
    return float(
        await pool.fetchval(
            f"SELECT sum(i) FROM {table} r JOIN series s ON s.id = r.series_id,"  # noqa: S608
            f" unnest(r.incs) i WHERE s.metric = $1 AND r.{column} IS NOT NULL",
            COUNTER,
        )
    )


async def test_a_late_last_row_of_a_compacted_hour_is_not_counted_again_in_the_next_hour(
    pool: asyncpg.Pool,
) -> None:
    target = await add_target(pool)
    # Two hours at one scrape a minute, the last scrape of the first hour missing.
    times = [DAY0 + 60 * i for i in range(120)]
    await write(pool, counter_scrapes(target, times[:59] + times[60:]))
    await maintain(pool, DAY0 + 2 * HOUR + 700)
    # The gap is counted in the second hour's first minute: 120 - 1 steps of 10 in all.
    assert await rollup_increase(pool, "rollup_1m") == pytest.approx(10 * 119)
    # A backfill brings the missing scrape after both hours were compacted.
    await write(pool, counter_scrapes(target, [times[59]]))
    report = await maintain(pool, DAY0 + 2 * HOUR + 800)
    assert report.late_merged == [DAY0]
    assert await rollup_increase(pool, "rollup_1m") == pytest.approx(10 * 119)
    # The chart over rollups says the same, minute by minute.
    end = DAY0 + 2 * HOUR
    chart = await ChartReader(StorageReader(pool)).chart(
        name_is(COUNTER), DAY0, end, points=120, now=end + 800
    )
    assert chart.resolution == "1m"
    assert chart.series[0].buckets.increase == [0.0] + [10.0] * 119


async def test_a_late_row_at_the_end_of_a_day_redoes_the_next_days_hourly_rollup(
    pool: asyncpg.Pool,
) -> None:
    target = await add_target(pool)
    # The last hour of one day and the first of the next; both days are rolled up by the hour.
    first = DAY0 + 23 * HOUR
    times = [first + 60 * i for i in range(120)]
    await write(pool, counter_scrapes(target, times[:59] + times[60:]))
    report = await maintain(pool, DAY0 + 2 * DAY + 700)
    assert report.days == [DAY0, DAY0 + DAY]
    await write(pool, counter_scrapes(target, [times[59]]))
    await maintain(pool, DAY0 + 2 * DAY + 800)
    assert await rollup_increase(pool, "rollup_1m") == pytest.approx(10 * 119)
    assert await rollup_increase(pool, "rollup_1h") == pytest.approx(10 * 119)


async def test_late_rows_in_two_consecutive_compacted_hours_count_every_increase_once(
    pool: asyncpg.Pool,
) -> None:
    target = await add_target(pool)
    times = [DAY0 + 60 * i for i in range(180)]
    late = {59, 60, 119}  # the end of hour 0, the start and the end of hour 1
    await write(pool, counter_scrapes(target, [t for i, t in enumerate(times) if i not in late]))
    await maintain(pool, DAY0 + 3 * HOUR + 700)
    await write(pool, counter_scrapes(target, [times[i] for i in sorted(late)]))
    report = await maintain(pool, DAY0 + 3 * HOUR + 800)
    assert report.late_merged == [DAY0, DAY0 + HOUR]
    assert await rollup_increase(pool, "rollup_1m") == pytest.approx(10 * 179)


async def test_a_rule_output_rewritten_into_a_compacted_hour_keeps_the_later_value(
    pool: asyncpg.Pool,
) -> None:
    writer = SampleWriter(pool, "node")
    labels = (("job", "node"),)
    await writer.append_series([("job:load:avg", labels, DAY0 + 60 * i, 1.0) for i in range(60)])
    assert await writer.flush()
    await maintain(pool, DAY0 + HOUR + 700)
    assert await pool.fetchval("SELECT count(*) FROM sample_chunks") == 1
    # A rule re-evaluated after a restart writes the same timestamps again: the later wins,
    # as it does (ON CONFLICT DO UPDATE) in an hour not compacted yet.
    await writer.append_series([("job:load:avg", labels, DAY0 + 60 * i, 2.0) for i in range(30)])
    assert await writer.flush()
    reader = StorageReader(pool)
    got = await reader.select(name_is("job:load:avg"), DAY0, DAY0 + HOUR)
    assert got[0].values == [2.0] * 30 + [1.0] * 30  # before maintenance merges them
    charts = ChartReader(reader)
    raw = await charts.chart(name_is("job:load:avg"), DAY0, DAY0 + HOUR, points=120, now=DAY0)
    assert raw.resolution == "raw"
    assert raw.series[0].buckets.avg == [2.0] * 30 + [1.0] * 30  # not both values

    report = await maintain(pool, DAY0 + HOUR + 800)
    assert report.late_merged == [DAY0]
    got = await reader.select(name_is("job:load:avg"), DAY0, DAY0 + HOUR)
    assert got[0].values == [2.0] * 30 + [1.0] * 30
    sums = "SELECT sum(s) FROM rollup_1m, unnest(sums) s WHERE block_start = $1"
    assert await pool.fetchval(sums, at(DAY0)) == 90.0


async def test_a_replayed_scrape_into_a_compacted_hour_is_stored_once(pool: asyncpg.Pool) -> None:
    target = await add_target(pool)
    times = [DAY0 + 60 * i for i in range(60)]
    await write(pool, counter_scrapes(target, times))
    await maintain(pool, DAY0 + HOUR + 700)
    await write(pool, counter_scrapes(target, times[10:20]))  # a spool segment replayed again
    await maintain(pool, DAY0 + HOUR + 800)
    got = await StorageReader(pool).select(name_is(COUNTER), DAY0, DAY0 + HOUR)
    assert got[0].timestamps == times
    assert await rollup_increase(pool, "rollup_1m") == pytest.approx(10 * 59)


async def test_an_hour_compacted_mid_step_stays_on_charts_before_the_step_ends(
    pool: asyncpg.Pool,
) -> None:
    target = await add_target(pool)
    async with pool.acquire() as conn:
        await maintenance.ensure_partitions(conn, DAY0)
    times = [DAY0 + 60 * i for i in range(60)]
    await write(pool, counter_scrapes(target, times))
    # What a maintenance step does first; the rest of the step (late rows, days) may take a
    # while, and charts read between the two must still find the hour somewhere.
    async with pool.acquire() as conn:
        await maintenance.compact_block(conn, DAY0)
    end = DAY0 + HOUR
    chart = await ChartReader(StorageReader(pool)).chart(
        name_is(COUNTER), DAY0, end, points=60, now=end + 700
    )
    assert chart.resolution == "1m"
    assert len(chart.series[0].buckets.timestamps) == 60


async def test_late_rows_find_their_utc_hour_whatever_the_sessions_time_zone(
    database_url: str,
) -> None:
    # India is UTC+05:30: date_trunc('hour', ts) in that zone cuts hours at half past (UTC).
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, server_settings={"timezone": "Asia/Kolkata"}
    )
    assert pool is not None
    try:
        await migrate(pool)
        target = await add_target(pool)
        times = [DAY0 + 60 * i for i in range(60)]
        await write(pool, counter_scrapes(target, times))  # no partition: the default one
        report = await maintain(pool, DAY0 + HOUR + 700)
        assert report.late_merged == [DAY0]
        starts = await pool.fetch("SELECT DISTINCT block_start FROM sample_chunks")
        assert [r["block_start"] for r in starts] == [at(DAY0)]
        got = await StorageReader(pool).select(name_is(COUNTER), DAY0, DAY0 + HOUR)
        assert got[0].timestamps == times
    finally:
        await pool.close()


async def test_hourly_rollups_of_a_day_are_kept_until_the_whole_day_is_past_retention(
    pool: asyncpg.Pool,
) -> None:
    target = await add_target(pool)
    await write(pool, counter_scrapes(target, [DAY0 + 600 * i for i in range(144)]))
    retention = Retention(raw=DAY, rollup_1m=DAY, rollup_1h=2 * DAY)
    report = await maintain(pool, DAY0 + DAY + 700, retention)
    assert report.days == [DAY0]
    # Half of the day is within the hourly rollups' retention: those hours stay.
    now = DAY0 + 2 * DAY + 12 * HOUR
    await maintain(pool, now, retention)
    assert await pool.fetchval("SELECT count(DISTINCT day) FROM rollup_1h") == 1
    chart = await ChartReader(StorageReader(pool), retention).chart(
        name_is(COUNTER), DAY0 + 12 * HOUR, DAY0 + DAY, points=12, now=now
    )
    assert chart.resolution == "1h"
    assert len(chart.series[0].buckets.timestamps) == 12
    await maintain(pool, DAY0 + 3 * DAY, retention)
    assert await pool.fetchval("SELECT count(*) FROM rollup_1h") == 0


async def test_rows_older_than_the_raw_retention_still_reach_the_rollups(
    pool: asyncpg.Pool,
) -> None:
    # Maintenance stopped (so no partitions) for longer than the raw retention, or an upgraded
    # 001 table: rows of hours never compacted, 20 days old. Raw samples are kept 15 days,
    # 1-minute rollups 90 and hourly ones two years, so the rollups must get them.
    target = await add_target(pool)
    times = [DAY0 + 60 * i for i in range(60)]
    await write(pool, counter_scrapes(target, times))
    now = DAY0 + 20 * DAY
    retention = Retention()
    await maintain(pool, now, retention)
    await maintain(pool, now + 60, retention)
    assert await pool.fetchval("SELECT count(*) FROM samples") == 0
    assert await pool.fetchval("SELECT count(*) FROM sample_chunks") == 0  # past raw retention
    assert await rollup_increase(pool, "rollup_1m") == pytest.approx(10 * 59)
    assert await rollup_increase(pool, "rollup_1h") == pytest.approx(10 * 59)
    chart = await ChartReader(StorageReader(pool), retention).chart(
        name_is(COUNTER), DAY0, DAY0 + HOUR, points=60, now=now
    )
    assert chart.resolution == "1m"
    assert len(chart.series[0].buckets.timestamps) == 60


async def test_an_hour_left_uncompacted_past_the_raw_retention_still_reaches_the_rollups(
    pool: asyncpg.Pool,
) -> None:
    # Maintenance stopped for longer than the raw retention: the hour's partition is still
    # there, and must be rolled up before its raw samples go.
    target = await add_target(pool)
    async with pool.acquire() as conn:
        await maintenance.ensure_partitions(conn, DAY0)
    await write(pool, counter_scrapes(target, [DAY0 + 60 * i for i in range(60)]))
    now = DAY0 + 20 * DAY
    await maintain(pool, now)
    await maintain(pool, now + 60)
    assert await pool.fetchval("SELECT count(*) FROM sample_chunks") == 0
    assert await rollup_increase(pool, "rollup_1m") == pytest.approx(10 * 59)


async def test_closed_hours_stay_on_charts_while_a_backlog_of_late_hours_is_merged(
    pool: asyncpg.Pool,
) -> None:
    target = await add_target(pool)
    backlog = maintenance.LATE_BLOCKS_PER_STEP + 2
    # One sample in each of many old hours (an import), in the default partition...
    await write(pool, counter_scrapes(target, [DAY0 + HOUR * i for i in range(backlog)]))
    # ...and a recent hour in its own partition, closed by the time maintenance runs.
    recent = DAY0 + backlog * HOUR
    async with pool.acquire() as conn:
        await maintenance.ensure_partitions(conn, recent)
    await write(pool, counter_scrapes(target, [recent + 60 * i for i in range(60)]))
    report = await maintain(pool, recent + HOUR + 700)
    assert len(report.late_merged) == maintenance.LATE_BLOCKS_PER_STEP
    end = recent + HOUR
    charts = ChartReader(StorageReader(pool))
    chart = await charts.chart(name_is(COUNTER), recent, end, points=60, now=end + 700)
    assert chart.resolution == "1m"
    assert len(chart.series[0].buckets.timestamps) == 60
    report = await maintain(pool, recent + HOUR + 760)
    assert report.compacted == [recent]
    chart = await charts.chart(name_is(COUNTER), recent, end, points=60, now=end + 760)
    assert len(chart.series[0].buckets.timestamps) == 60


async def test_an_hour_compacted_after_a_chart_read_the_watermark_is_still_on_the_chart(
    pool: asyncpg.Pool,
) -> None:
    # A chart reads the watermark, then the raw rows after it; an hour compacted in between
    # (or compacted while an older late row keeps the watermark back, as here) is in chunks
    # past the watermark, and the raw read must find it there.
    target = await add_target(pool)
    await write(pool, counter_scrapes(target, [DAY0]))  # a late row in the default partition
    recent = DAY0 + 2 * HOUR
    async with pool.acquire() as conn:
        await maintenance.ensure_partitions(conn, recent)
    await write(pool, counter_scrapes(target, [recent + 60 * i for i in range(60)]))
    async with pool.acquire() as conn:
        await maintenance.compact_block(conn, recent)
        assert await maintenance.get_mark(conn, "compacted_until") is None
    end = recent + HOUR
    chart = await ChartReader(StorageReader(pool)).chart(
        name_is(COUNTER), recent, end, points=60, now=end + 700
    )
    assert chart.resolution == "1m"
    assert len(chart.series[0].buckets.timestamps) == 60
    assert sum(chart.series[0].buckets.increase) == pytest.approx(10 * 59)


async def test_hours_and_days_stay_utc_across_a_daylight_saving_change_of_the_session(
    database_url: str,
) -> None:
    # New York moved its clocks forward at 2026-03-08 07:00 UTC: hours and days stay UTC.
    day = datetime(2026, 3, 8, tzinfo=UTC).timestamp()
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, server_settings={"timezone": "America/New_York"}
    )
    assert pool is not None
    try:
        await migrate(pool)
        target = await add_target(pool)
        times = [day + 6 * HOUR + 60 * i for i in range(120)]  # 06:00-07:59 UTC
        await write(pool, counter_scrapes(target, times))
        report = await maintain(pool, day + DAY + 700)
        assert report.late_merged == [day + 6 * HOUR, day + 7 * HOUR]
        assert report.days == [day]
        row = await pool.fetchrow(
            "SELECT day, slots, counts FROM rollup_1h r JOIN series s ON s.id = r.series_id"
            " WHERE s.metric = $1",
            COUNTER,
        )
        assert row["day"] == at(day)
        assert list(row["slots"]) == [6, 7] and list(row["counts"]) == [60, 60]
        assert await rollup_increase(pool, "rollup_1h") == pytest.approx(10 * 119)
    finally:
        await pool.close()


async def test_a_late_row_past_the_raw_retention_leaves_its_hours_rollups_whole(
    pool: asyncpg.Pool,
) -> None:
    # The hour was compacted and rolled up long ago; its chunks are gone with the raw
    # retention. A row for it arriving now cannot be merged into a chunk that is no longer
    # there, and must not replace the hour's rollups with a rollup of itself alone.
    target = await add_target(pool)
    await write(pool, counter_scrapes(target, [DAY0 + 60 * i for i in range(60)]))
    await maintain(pool, DAY0 + HOUR + 700)
    now = DAY0 + 20 * DAY
    await maintain(pool, now)
    assert await pool.fetchval("SELECT count(*) FROM sample_chunks") == 0
    await write(pool, counter_scrapes(target, [DAY0 + 30]))
    await maintain(pool, now + 60)
    await maintain(pool, now + 120)
    counts = (
        "SELECT sum(c) FROM rollup_1m r JOIN series s ON s.id = r.series_id, unnest(r.counts) c"
        " WHERE s.metric = $1"
    )
    assert await pool.fetchval(counts, COUNTER) == 60
    assert await rollup_increase(pool, "rollup_1m") == pytest.approx(10 * 59)
    assert await rollup_increase(pool, "rollup_1h") == pytest.approx(10 * 59)
