"""The head's recent window: every series' last minutes in memory, served through the storage
reader so that recent queries (rules, the live view) do not touch the database."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import numpy as np
import pytest

from vpsmon.collector.head import Head, RecentSamples
from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Target
from vpsmon.collector.storage.query import STALE_NAN, Matcher, is_stale_marker
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.collector.storage.writer import SampleWriter

T0 = 1_767_225_600.0


def target(server_id: int = 1, host: str = "10.0.0.1") -> Target:
    return Target(server_id, host, f"http://{host}:9190/metrics", 15.0, 10.0, {"env": "prod"})


def scrape(t: Target, i: int, *extra: Sample) -> ScrapeResult:
    return ScrapeResult(
        t,
        T0 + 15 * i,
        0.1,
        [
            Sample("node_load1", (), float(i)),
            Sample("pushed", (("env", "dev"),), 1.0),  # clashes with a target label
            *extra,
        ],
    )


class NoDatabase:
    """A pool that fails the test if anything asks the database."""

    def acquire(self) -> object:
        raise AssertionError("the database was asked")


def name_is(name: str) -> list[Matcher]:
    return [Matcher("__name__", "=", name)]


async def test_a_query_inside_the_window_is_answered_without_the_database() -> None:
    head = Head(job="node", window=300)
    for i in range(30):
        await head.append(scrape(target(), i))
    reader = StorageReader(NoDatabase(), recent=head.recent)  # type: ignore[arg-type]
    end = T0 + 15 * 29
    got = await reader.select(name_is("node_load1"), end - 60, end)
    assert [s.labels for s in got] == [
        {"__name__": "node_load1", "env": "prod", "instance": "10.0.0.1:9190", "job": "node"}
    ]
    assert got[0].timestamps == [end - 60, end - 45, end - 30, end - 15, end]
    assert got[0].values == [25.0, 26.0, 27.0, 28.0, 29.0]
    pushed = await reader.series(name_is("pushed"), end - 60, end)
    assert pushed == [
        {
            "__name__": "pushed",
            "env": "prod",
            "exported_env": "dev",
            "instance": "10.0.0.1:9190",
            "job": "node",
        }
    ]
    assert await reader.label_values("__name__", [Matcher("job", "=", "node")], end - 1, end) == [
        "node_load1",
        "pushed",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "up",
    ]
    # Older than the window: the database is asked.
    with pytest.raises(AssertionError, match="database was asked"):
        await reader.select(name_is("node_load1"), end - 600, end)


async def test_a_range_across_the_window_edge_takes_each_sample_once_from_db_and_head(
    pool: asyncpg.Pool,
) -> None:
    server_id = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('a', 'http://10.0.0.1:9190/metrics') RETURNING id"
    )
    t = target(server_id)
    head = Head(job="node", window=120)
    writer = SampleWriter(pool, "node")
    for i in range(20):
        result = scrape(t, i, Sample("gone", (), STALE_NAN if i == 19 else 1.0))
        await head.append(result)
        await writer.append(result)
    assert await writer.flush()
    assert head.recent.covered_from() == T0 + 15 * 19 - 120
    reader = StorageReader(pool, recent=head.recent)
    got = await reader.select(name_is("node_load1"), T0, T0 + 15 * 19)
    assert len(got) == 1
    assert got[0].timestamps == [T0 + 15 * i for i in range(20)]
    assert got[0].values == [float(i) for i in range(20)]
    gone = await reader.select(name_is("gone"), T0, T0 + 15 * 19)
    assert is_stale_marker(gone[0].values[-1]) and gone[0].values[0] == 1.0
    assert len(await reader.series([Matcher("job", "=", "node")], T0, T0 + 15 * 19)) == 6


def test_the_window_is_bounded_and_vanished_series_are_forgotten() -> None:
    recent = RecentSamples("node", window=60)
    t = target()
    recent.add(scrape(t, 0, Sample("container_cpu", (("name", "old"),), 1.0)))
    for i in range(1, 200):
        recent.add(scrape(t, i))
    assert recent.covered_from() == T0 + 15 * 199 - 60
    assert recent.sample_count <= 5 * 5  # five series, at most five scrapes in 60 s
    assert recent.series_count == 5  # container_cpu{name="old"} is gone
    assert recent.series_refs(name_is("container_cpu"), T0, T0 + 15 * 199) == []
    recent.forget(1)
    assert recent.series_count == 0


async def test_a_backfilled_scrape_joins_the_window_in_order_and_leaves_the_live_state() -> None:
    head = Head(job="node", window=600)
    t = target()
    await head.append(scrape(t, 0))
    await head.append(scrape(t, 2))
    await head.append(scrape(t, 1))  # late
    await head.append(scrape(t, 2))  # again
    state = head.state(1)
    assert state is not None and state.last_scrape == T0 + 30
    ref = head.recent.series_refs(name_is("node_load1"), T0, T0 + 30)[0]
    assert head.recent.samples(ref, T0, T0 + 30) == ([T0, T0 + 15, T0 + 30], [0.0, 1.0, 2.0])


async def _comings_and_goings() -> Head:
    """Series that come and go, a NaN the target sent and a staleness marker."""
    head = Head(job="node", window=600)
    t1, t2 = target(1, "10.0.0.1"), target(2, "10.0.0.2")
    for i in range(40):
        extra = [Sample("flaky", (("n", "a"),), float(i))] if i % 3 else []
        if i == 7:
            extra.append(Sample("odd", (), float("nan")))
        if 20 <= i < 25:
            extra.append(Sample("late", (("empty", ""),), STALE_NAN if i == 24 else 2.0))
        await head.append(scrape(t1, i, *extra))
        await head.append(scrape(t2, i, *extra[:1]))
    return head


async def _assert_selection_equals_series_by_series(recent: RecentSamples, end: float) -> None:
    reader = StorageReader(NoDatabase(), recent=recent)  # type: ignore[arg-type]
    for matchers in (
        name_is("flaky"),
        name_is("odd"),
        name_is("late"),
        [Matcher("job", "=", "node")],
        [Matcher("__name__", "=~", "node_load1|flaky"), Matcher("instance", "!=", "10.0.0.2:9190")],
    ):
        for start in (T0, T0 + 100, end - 1):
            got = await reader.select(matchers, start, end)
            refs = sorted(
                recent.series_refs(matchers, start, end), key=lambda r: sorted(r.labels.items())
            )
            want = [(r.labels, *recent.samples(r, start, end)) for r in refs]
            assert len(got) == len(want)
            for s, w in zip(got, want, strict=True):
                assert s.labels == w[0] and s.timestamps == w[1]
                assert [repr(v) for v in s.values] == [repr(v) for v in w[2]]
                assert s.key is None or s.key == tuple(sorted(s.labels.items()))


async def test_the_one_pass_selection_equals_the_series_by_series_answer() -> None:
    # The reader's one-pass path over the head must give exactly what refs + samples give.
    head = await _comings_and_goings()
    end = T0 + 15 * 39
    await _assert_selection_equals_series_by_series(head.recent, end)
    reader = StorageReader(NoDatabase(), recent=head.recent)  # type: ignore[arg-type]
    late = await reader.select(name_is("late"), T0, end)
    assert is_stale_marker(late[0].values[-1]) and late[0].key is None  # an empty label value


async def test_a_selection_read_again_sees_new_scrapes_and_new_series() -> None:
    # The head remembers what each selection matched: the answers must stay the series-by-
    # series ones, and a new scrape (new series, new samples) must be seen.
    head = await _comings_and_goings()
    recent = head.recent
    end = T0 + 15 * 39
    await _assert_selection_equals_series_by_series(recent, end)
    reader = StorageReader(NoDatabase(), recent=recent)  # type: ignore[arg-type]
    before = await reader.select(name_is("flaky"), T0, end + 15)
    assert len(before) == 2
    await head.append(scrape(target(1, "10.0.0.1"), 40, Sample("flaky", (("n", "b"),), 7.0)))
    await _assert_selection_equals_series_by_series(recent, end + 15)
    after = await reader.select(name_is("flaky"), T0, end + 15)
    assert [s.labels.get("n") for s in after] == ["a", "b", "a"]
    assert after[1].values == [7.0]
    assert after[0].timestamps[-1] == before[0].timestamps[-1]  # t1 had no "a" in scrape 40


def test_a_large_head_gives_the_garbage_collector_nothing_to_walk_per_series() -> None:
    # The cyclic garbage collector walks every tracked container on each full collection;
    # a head that kept one tracked object per series made those pauses grow with the fleet
    # (issue #5). Count the tracked objects a head holds for 5 and for 105 servers of 100
    # series each: the difference must not grow with the series.
    import gc

    def tracked_after(servers: int) -> int:
        head = Head(job="node")
        for i in range(3):
            for sid in range(1, servers + 1):
                samples = [Sample(f"m{k}", (("k", str(k)),), float(i)) for k in range(100)]
                asyncio.run(
                    head.append(
                        ScrapeResult(
                            target(sid, f"10.0.{sid // 250}.{sid % 250}"), T0 + 15 * i, 0.1, samples
                        )
                    )
                )
        gc.collect()
        gc.collect()
        count = len(gc.get_objects())
        assert head.recent.series_count == servers * 103
        return count

    few, many = tracked_after(5), tracked_after(105)
    # 100 more servers, 10,300 more series: a few objects per server (its window, state and
    # last snapshots) are fine, one per series is not (main before this test: 21,642).
    assert many - few < 20 * 100, many - few


def test_a_head_fed_the_parser_layout_holds_what_the_long_way_holds() -> None:
    """The head fills a scrape's row from the previous layout when the parser hands back the
    same one; through label changes, vanished, reordered and duplicated series, and the
    columns moving when vanished series are dropped, it must hold what a head that looks up
    every sample holds."""
    from vpsmon.collector.scrape.parse import ScrapeCache, parse_scrape

    bodies = [
        'a{x="1"} 1\nb 2\nc 3\n',
        'a{x="1"} 4\nb 5\nc 6\n',  # same series: the layout path
        'a{x="2"} 7\nb 8\nc 9\n',  # a label changed
        "b 10\nc 11\n",  # a vanished
        "c 12\nb 13\n",  # reordered
        "c 14\nb 15\n",
        "b 16\nb 17\nc 18\n",  # a duplicated line: the last value wins
        "b 19\nb 20\nc 21\n",
    ]
    fast, slow = Head(job="node", window=600), Head(job="node", window=600)
    cache = ScrapeCache()
    t = target()
    loop = asyncio.new_event_loop()
    try:
        for i in range(120):  # past 64 appends: vanished columns are dropped and remapped
            parsed = parse_scrape(bodies[min(i, 3 + i % 5)], 100, cache)
            result = ScrapeResult(t, T0 + 15 * i, 0.1, parsed.samples, layout=parsed.layout)
            loop.run_until_complete(fast.append(result))
            loop.run_until_complete(slow.append(dataclasses.replace(result, layout=None)))
            end = T0 + 15 * i
            assert sorted(fast.recent.select([], end - 600, end)) == sorted(
                slow.recent.select([], end - 600, end)
            )
            fast_state, slow_state = fast.state(1), slow.state(1)
            assert fast_state is not None and slow_state is not None
            assert fast_state.current == slow_state.current
            assert fast_state.previous == slow_state.previous
    finally:
        loop.close()
    got = {dict(k)["__name__"]: vs for k, _, _, vs in fast.recent.select([], T0, T0 + 15 * 119)}
    assert got["b"][-1] == 20.0 and got["c"][-1] == 21.0


async def test_a_block_holds_every_matched_series_with_the_samples_select_gives() -> None:
    head = await _comings_and_goings()
    recent = head.recent
    end = T0 + 15 * 39
    for matchers in (name_is("flaky"), name_is("late"), [Matcher("job", "=", "node")]):
        for start in (T0, T0 + 100, end - 1, end + 1):
            block = recent.select_block(matchers, start, end)
            got = recent.select(matchers, start, end)
            by_key = {tuple(kv for kv in sorted(labels.items()) if kv[1]): (ts, vs)
                      for _, labels, ts, vs in got}  # fmt: skip
            assert list(block.keys) == sorted(block.keys)
            assert block.ts.shape == block.vs.shape == (len(block.keys), block.ts.shape[1])
            for row, key in enumerate(block.keys):
                keep = ~np.isnan(block.ts[row])
                ts, vs = block.ts[row][keep].tolist(), block.vs[row][keep].tolist()
                want = by_key.pop(key, ([], []))
                assert ts == want[0] and [repr(v) for v in vs] == [repr(v) for v in want[1]]
            assert by_key == {}
    late = recent.select_block(name_is("late"), T0, end)
    assert late.keys[0] == (("__name__", "late"), ("env", "prod"), ("instance", "10.0.0.1:9190"),
                            ("job", "node"))  # fmt: skip
    assert is_stale_marker(late.vs[0][~np.isnan(late.ts[0])][-1])
    # No sample in range: the row stays.
    assert recent.select_block(name_is("late"), end - 1, end).keys == late.keys


async def test_a_block_keeps_its_keys_object_until_a_matched_series_appears() -> None:
    head = await _comings_and_goings()
    recent = head.recent
    end = T0 + 15 * 39
    first = recent.select_block(name_is("flaky"), T0, end).keys
    await head.append(scrape(target(1, "10.0.0.1"), 40, Sample("other", (), 1.0)))
    assert recent.select_block(name_is("flaky"), T0, end + 15).keys is first
    await head.append(scrape(target(1, "10.0.0.1"), 41, Sample("flaky", (("n", "b"),), 7.0)))
    after = recent.select_block(name_is("flaky"), T0, end + 30).keys
    assert after is not first and len(after) == len(first) + 1


async def test_the_reader_gives_a_block_only_when_the_head_holds_the_range() -> None:
    head = await _comings_and_goings()
    reader = StorageReader(NoDatabase(), recent=head.recent)  # type: ignore[arg-type]
    end = T0 + 15 * 39
    block = reader.select_block(name_is("flaky"), end - 300, end)
    assert block is not None and len(block.keys) == 2
    assert reader.select_block(name_is("flaky"), end - 3000, end) is None
    assert StorageReader(NoDatabase()).select_block(name_is("flaky"), end - 1, end) is None  # type: ignore[arg-type]
