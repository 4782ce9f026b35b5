"""The storage reader (SampleSource) and the chart reader against real PostgreSQL."""

from __future__ import annotations

import math

import asyncpg
import pytest

from vpsmon.collector.head import RecentSamples
from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.collector.storage.chart import ChartReader, choose_step
from vpsmon.collector.storage.query import STALE_NAN, Matcher, is_stale_marker
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.collector.storage.writer import SampleWriter

T0 = 1_700_000_100.0  # a multiple of 60 plus 40 s: buckets below start mid-minute


async def add_target(pool: asyncpg.Pool, name: str, host: str, **labels: str) -> Target:
    url = f"http://{host}:9190/metrics"
    server_id = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ($1, $2) RETURNING id", name, url
    )
    return Target(server_id, name, url, 15.0, 10.0, labels)


async def write(pool: asyncpg.Pool, results: list[ScrapeResult]) -> None:
    writer = SampleWriter(pool, "node")
    for result in results:
        await writer.append(result)
    assert await writer.flush()


def cpu(mode: str, value: float) -> Sample:
    return Sample("node_cpu_seconds_total", (("cpu", "0"), ("mode", mode)), value)


@pytest.fixture
async def fleet(pool: asyncpg.Pool) -> tuple[Target, Target]:
    web = await add_target(pool, "web", "10.0.0.1", env="prod")
    db = await add_target(pool, "db", "10.0.0.2")
    results = []
    for i in range(4):
        ts = T0 + 15 * i
        results.append(
            ScrapeResult(web, ts, 0.1, [Sample("node_load1", (), 0.5 + i), cpu("idle", 10.0 * i)])
        )
        results.append(ScrapeResult(db, ts, 0.2, [Sample("node_load1", (), 2.0 + i)]))
    await write(pool, results)
    return web, db


def m(name: str, op: str, value: str) -> Matcher:
    return Matcher(name, op, value)  # type: ignore[arg-type]


async def test_select_returns_matching_series_with_their_samples_in_the_inclusive_range(
    pool: asyncpg.Pool, fleet: tuple[Target, Target]
) -> None:
    reader = StorageReader(pool)
    got = await reader.select([m("__name__", "=", "node_load1")], T0 + 15, T0 + 30)
    assert [s.labels for s in got] == [
        {"__name__": "node_load1", "env": "prod", "instance": "10.0.0.1:9190", "job": "node"},
        {"__name__": "node_load1", "instance": "10.0.0.2:9190", "job": "node"},
    ]
    assert got[0].timestamps == [T0 + 15, T0 + 30]
    assert got[0].values == [1.5, 2.5]
    assert got[1].values == [3.0, 4.0]


@pytest.mark.parametrize(
    ("matchers", "expected_instances"),
    [
        ([("instance", "=", "10.0.0.2:9190")], {"10.0.0.2:9190"}),
        ([("instance", "!=", "10.0.0.2:9190")], {"10.0.0.1:9190"}),
        ([("env", "=", "")], {"10.0.0.2:9190"}),  # an absent label matches ""
        ([("env", "!=", "")], {"10.0.0.1:9190"}),
        ([("instance", "=~", "10.0.0.1:9190|10.0.0.2:9190")], {"10.0.0.1:9190", "10.0.0.2:9190"}),
        ([("instance", "=~", "10.0.0.1")], set()),  # regexes are anchored at both ends
        ([("instance", "=~", "10\\.0\\.0\\.1.*")], {"10.0.0.1:9190"}),
        ([("instance", "!~", ".*1:9190")], {"10.0.0.2:9190"}),
        ([("env", "=~", "prod|")], {"10.0.0.1:9190", "10.0.0.2:9190"}),
        ([("job", "=", "node"), ("env", "=", "prod")], {"10.0.0.1:9190"}),
    ],
)
async def test_label_matchers_follow_prometheus_semantics(
    pool: asyncpg.Pool,
    fleet: tuple[Target, Target],
    matchers: list[tuple[str, str, str]],
    expected_instances: set[str],
) -> None:
    reader = StorageReader(pool)
    selector = [m("__name__", "=", "node_load1"), *(m(*x) for x in matchers)]
    got = await reader.select(selector, T0, T0 + 60)
    assert {s.labels["instance"] for s in got} == expected_instances


async def test_a_metric_name_regex_is_anchored_and_alternations_work(
    pool: asyncpg.Pool, fleet: tuple[Target, Target]
) -> None:
    reader = StorageReader(pool)
    web = [m("instance", "=", "10.0.0.1:9190")]
    names = await reader.label_values("__name__", [m("__name__", "=~", "node_.*"), *web], T0, T0)
    assert names == ["node_cpu_seconds_total", "node_load1"]
    assert await reader.label_values("__name__", [m("__name__", "=~", "ode_.*")], T0, T0) == []
    both = await reader.label_values("__name__", [m("__name__", "=~", "up|node_load1")], T0, T0)
    assert both == ["node_load1", "up"]


async def test_series_without_samples_in_the_range_are_left_out(
    pool: asyncpg.Pool, fleet: tuple[Target, Target]
) -> None:
    reader = StorageReader(pool)
    assert await reader.select([m("__name__", "=", "node_load1")], T0 + 100, T0 + 200) == []
    assert await reader.series([m("__name__", "=", "node_load1")], T0 - 100, T0 - 1) == []
    found = await reader.series([m("__name__", "=", "node_load1")], T0 + 45, T0 + 100)
    assert len(found) == 2


async def test_series_label_names_and_values_describe_the_matching_series(
    pool: asyncpg.Pool, fleet: tuple[Target, Target]
) -> None:
    reader = StorageReader(pool)
    sel = [m("job", "=", "node"), m("instance", "=", "10.0.0.1:9190")]
    series = await reader.series(sel, T0, T0 + 60)
    assert {s["__name__"] for s in series} == {
        "node_load1",
        "node_cpu_seconds_total",
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
    }
    names = await reader.label_names(sel, T0, T0 + 60)
    assert names == ["__name__", "cpu", "env", "instance", "job", "mode"]
    assert await reader.label_values("instance", [m("__name__", "=", "up")], T0, T0 + 60) == [
        "10.0.0.1:9190",
        "10.0.0.2:9190",
    ]
    assert await reader.label_values("mode", [m("__name__", "=~", ".+")], T0, T0 + 60) == ["idle"]


async def test_staleness_markers_come_back_bit_for_bit(pool: asyncpg.Pool) -> None:
    target = await add_target(pool, "web", "10.0.0.1")
    await write(
        pool,
        [
            ScrapeResult(target, T0, 0.1, [Sample("node_load1", (), 1.0)]),
            ScrapeResult(target, T0 + 15, 0.1, [Sample("node_load1", (), STALE_NAN)]),
            ScrapeResult(target, T0 + 30, 0.1, [Sample("node_load1", (), math.nan)]),
        ],
    )
    got = await StorageReader(pool).select([m("__name__", "=", "node_load1")], T0, T0 + 30)
    assert got[0].values[0] == 1.0
    assert is_stale_marker(got[0].values[1])
    assert math.isnan(got[0].values[2]) and not is_stale_marker(got[0].values[2])


async def test_a_selector_matching_too_many_series_is_refused(
    pool: asyncpg.Pool, fleet: tuple[Target, Target]
) -> None:
    reader = StorageReader(pool, max_series=3)
    with pytest.raises(ValueError, match="more than 3 series"):
        await reader.select([m("job", "=", "node")], T0, T0 + 60)


def test_the_chart_step_is_round_and_gives_at_most_the_points_asked_for() -> None:
    assert choose_step(0, 86400) == 120  # a day: 720 points of 2 minutes
    assert choose_step(0, 3600) == 5
    assert choose_step(0, 7 * 86400) == 900
    assert choose_step(0, 400 * 86400, points=100) == 7 * 86400
    assert choose_step(0, 1000 * 86400, points=100) == 10 * 86400
    with pytest.raises(ValueError, match="before start"):
        choose_step(10, 0)
    with pytest.raises(ValueError, match="points"):
        choose_step(0, 10, points=0)


async def test_the_chart_reader_buckets_one_servers_series_with_min_max_avg_last_and_increase(
    pool: asyncpg.Pool,
) -> None:
    web = await add_target(pool, "web", "10.0.0.1")
    other = await add_target(pool, "db", "10.0.0.2")
    start = 1_700_000_040.0  # a multiple of 60
    counter = [100.0, 110.0, 130.0, 5.0, 15.0, 20.0, 20.0, 50.0]  # a reset after 130
    results = []
    for i, value in enumerate(counter):
        ts = start + 15 * i
        results.append(ScrapeResult(web, ts, 0.1, [cpu("user", value)]))
        results.append(ScrapeResult(other, ts, 0.1, [cpu("user", 1.0)]))
    await write(pool, results)

    chart = await ChartReader(StorageReader(pool)).chart(
        [m("__name__", "=", "node_cpu_seconds_total")],
        start,
        start + 120,
        server_id=web.server_id,
        points=2,
        now=start + 200,
    )
    assert chart.step == 60
    assert chart.resolution == "1m"  # nothing compacted yet: the raw samples fill in
    assert [s.labels["instance"] for s in chart.series] == ["10.0.0.1:9190"]
    b = chart.series[0].buckets
    assert b.timestamps == [start, start + 60]
    assert b.min == [5.0, 15.0]
    assert b.max == [130.0, 50.0]
    assert b.avg == [(100 + 110 + 130 + 5) / 4, (15 + 20 + 20 + 50) / 4]
    assert b.last == [5.0, 50.0]
    # 10 + 20 + 5 (restarted from zero), then 10 + 5 + 0 + 30 (from the previous bucket's 5)
    assert b.increase == [35.0, 45.0]


async def test_the_chart_reader_takes_the_newest_buckets_from_the_head_when_not_yet_written(
    pool: asyncpg.Pool,
) -> None:
    web = await add_target(pool, "web", "10.0.0.1")
    other = await add_target(pool, "db", "10.0.0.2")
    start = 1_700_000_040.0  # a multiple of 60
    counter = [100.0, 110.0, 130.0, 5.0, 15.0, 20.0, 20.0, 50.0]  # a reset after 130
    head = RecentSamples(job="node", window=50)
    for i, value in enumerate(counter):
        ts = start + 15 * i
        scraped = [ScrapeResult(web, ts, 0.1, [cpu("user", value)])]
        if i >= 4:  # a series the writer has not stored yet
            scraped[0].samples.append(Sample("node_load1", (), float(i)))
        scraped.append(ScrapeResult(other, ts, 0.1, [cpu("user", 1.0)]))
        for result in scraped:
            head.add(result)
        if i < 4:  # the writer has stored the first minute only
            await write(pool, scraped)
    assert head.covered_from() == start + 55  # the window: the second minute

    chart = await ChartReader(StorageReader(pool, recent=head)).chart(
        [m("__name__", "=~", "node_cpu_seconds_total|node_load1")],
        start,
        start + 120,
        server_id=web.server_id,
        points=2,
        now=start + 200,
    )
    assert chart.step == 60
    assert [(s.labels["__name__"], s.labels["instance"]) for s in chart.series] == [
        ("node_cpu_seconds_total", "10.0.0.1:9190"),
        ("node_load1", "10.0.0.1:9190"),
    ]
    b = chart.series[0].buckets
    # The same buckets as when everything is stored (the test above).
    assert b.timestamps == [start, start + 60]
    assert b.min == [5.0, 15.0]
    assert b.max == [130.0, 50.0]
    assert b.avg == [(100 + 110 + 130 + 5) / 4, (15 + 20 + 20 + 50) / 4]
    assert b.last == [5.0, 50.0]
    assert b.increase == [35.0, 45.0]
    load = chart.series[1].buckets
    assert load.timestamps == [start + 60]
    assert load.avg == [(4 + 5 + 6 + 7) / 4]
    # What the database holds alone is the first minute.
    stored = await ChartReader(StorageReader(pool)).chart(
        [m("__name__", "=", "node_cpu_seconds_total")],
        start,
        start + 120,
        server_id=web.server_id,
        points=2,
        now=start + 200,
    )
    assert stored.series[0].buckets.timestamps == [start]


async def test_label_names_and_values_without_a_selector_come_from_the_index(
    pool: asyncpg.Pool, fleet: tuple[Target, Target]
) -> None:
    reader = StorageReader(pool, max_series=1)  # would refuse a series-by-series answer
    assert await reader.label_names([], T0, T0 + 60) == [
        "__name__",
        "cpu",
        "env",
        "instance",
        "job",
        "mode",
    ]
    assert await reader.label_values("instance", [], T0, T0 + 60) == [
        "10.0.0.1:9190",
        "10.0.0.2:9190",
    ]
    assert "node_load1" in await reader.label_values("__name__", [], T0, T0 + 60)
    assert await reader.label_values("nope", [], T0, T0 + 60) == []
