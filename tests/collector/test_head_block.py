"""The head's fleet-wide matrices (collector/head.py) against a model that keeps each scrape as
a dict: for random scrape sequences `select_block` and `select` must give, cell for cell and
bit for bit, what the model holds (issue #8's columnar rule path reads `select_block`)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpsmon.collector.head import RecentSamples
from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.parse import Sample
from vpsmon.collector.scrape.target import Labels, Target
from vpsmon.collector.storage.query import STALE_NAN, Matcher

T0 = 1_767_225_600.0
WINDOW = 60.0
VALUES = [0.0, 1.5, -2.0, math.nan, math.inf, -math.inf, STALE_NAN, 1e300, -0.0]
NAMES = ["a", "b", "c"]
LABELS: list[Labels] = [(), (("x", "1"),), (("x", "2"),), (("x", ""), ("y", "z"))]

# (series key, sorted label items): the model's series are (server id, name, scraped labels).
ModelKey = tuple[int, str, Labels]


def target(server_id: int) -> Target:
    host = f"10.0.0.{server_id}"
    return Target(server_id, host, f"http://{host}:9190/metrics", 15.0, 10.0, {})


def bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


@dataclass
class Model:
    """What the head must hold: per server its scrapes in the window as dicts, and the series
    it still knows (forgotten every 64 scrapes once they have no sample left)."""

    window: float
    latest: float | None = None
    scrapes: dict[int, dict[float, dict[ModelKey, float]]] = field(default_factory=dict)
    known: dict[int, set[ModelKey]] = field(default_factory=dict)
    appends: dict[int, int] = field(default_factory=dict)

    def add(self, result: ScrapeResult) -> None:
        ts = round(result.timestamp, 3)
        sid = result.target.server_id
        self.scrapes.setdefault(sid, {})
        self.known.setdefault(sid, set())
        self.latest = ts if self.latest is None else max(self.latest, ts)
        if ts < self.latest - self.window:
            return
        row = {(sid, s.name, s.labels): s.value for s in result.with_synthetic()}
        scrapes = self.scrapes[sid]
        scrapes[ts] = row
        for t in [t for t in scrapes if t < self.latest - self.window]:
            del scrapes[t]
        self.known[sid] |= set(row)
        self.appends[sid] = self.appends.get(sid, 0) + 1
        if self.appends[sid] % 64 == 0:
            self.known[sid] = {k for k in self.known[sid] if any(k in r for r in scrapes.values())}

    def series(self, start: float, end: float) -> dict[ModelKey, tuple[list[float], list[int]]]:
        out = {}
        for sid, scrapes in self.scrapes.items():
            for key in self.known[sid]:
                ts = sorted(t for t, row in scrapes.items() if key in row and start <= t <= end)
                out[key] = (ts, [bits(scrapes[t][key]) for t in ts])
        return out


def model_key(labels: dict[str, str]) -> ModelKey:
    sid = int(labels["instance"].split(":")[0].rsplit(".", 1)[1])
    scraped = tuple(sorted((k, v) for k, v in labels.items()
                           if k not in ("__name__", "instance", "job")))  # fmt: skip
    return sid, labels["__name__"], scraped


def engine_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if v))


SELECTIONS: list[list[Matcher]] = [
    [],
    [Matcher("__name__", "=", "a")],
    [Matcher("__name__", "=", "up")],
    [Matcher("__name__", "=~", "a|c"), Matcher("x", "!=", "2")],
    [Matcher("instance", "=~", "10.0.0.[12]:9190")],
]


def check(recent: RecentSamples, model: Model, start: float, end: float) -> None:
    want = model.series(start, end)
    held = {model_key(labels) for series in recent._servers.values() for labels in series.labels}
    assert held == set().union(*model.known.values())
    for matchers in SELECTIONS:
        labels_of = {}
        for series in recent._servers.values():
            for labels in series.labels:
                if all(m.matches(labels) for m in matchers):
                    labels_of[model_key(labels)] = labels
        expected = {k: want[k] for k in labels_of if k in want}
        block = recent.select_block(matchers, start, end)
        # Every series the head knows and the selection matches is a row, in label-set order.
        assert set(block.keys) == {engine_key(labels) for labels in labels_of.values()}
        assert len(block.keys) == len(labels_of)
        assert block.ts.shape == block.vs.shape and block.ts.shape[0] == len(block.keys)
        assert block.ts.dtype == np.float64 and block.vs.dtype == np.float64
        by_engine_key = {engine_key(labels): k for k, labels in labels_of.items()}
        order = [tuple(sorted(labels_of[by_engine_key[k]].items())) for k in block.keys]
        assert order == sorted(order)
        for row, key in enumerate(block.keys):
            present = ~np.isnan(block.ts[row])
            ts = block.ts[row][present].tolist()
            vs = [bits(v) for v in block.vs[row][present].tolist()]
            assert (ts, vs) == expected.get(by_engine_key[key], ([], [])), key
        selected = recent.select(matchers, start, end)
        assert [model_key(labels) for _, labels, _, _ in selected] == [
            by_engine_key[k] for k, row in zip(block.keys, block.ts, strict=True)
            if not np.isnan(row).all()
        ]  # fmt: skip
        for key, labels, ts, vs in selected:
            full = tuple(sorted(labels.items()))
            assert key == (full if all(v for _, v in full) else None)
            assert (ts, [bits(v) for v in vs]) == expected[model_key(labels)]


@st.composite
def scrapes(draw: st.DrawFn) -> list[tuple[ScrapeResult, bool]]:
    """A sequence of scrapes of three servers, each with a time of its own that mostly moves
    on (by one to fifteen seconds) and sometimes goes back (a late or replayed scrape)."""
    steps = draw(st.integers(1, 160))
    clock = {1: 0.0, 2: 0.25, 3: 7.5}
    layouts: dict[int, tuple[tuple[str, Labels], ...]] = {}
    out = []
    for _ in range(steps):
        sid = draw(st.sampled_from([1, 2, 3]))
        step = draw(st.sampled_from([1.0, 5.0, 15.0, 15.0, 15.0, 0.0, -5.0, -30.0, -100.0]))
        clock[sid] = max(0.0, clock[sid] + step)
        ts = T0 + clock[sid] + (0.0004 if draw(st.booleans()) else 0.0)  # rounded to ms
        series = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(NAMES), st.sampled_from(LABELS), st.sampled_from(VALUES)
                ),  # fmt: skip
                max_size=8,
            )
        )
        if draw(st.integers(0, 9)) == 0:  # a burst of new series: the block moves
            base = draw(st.integers(0, 1000))
            series += [(f"n{base + k}", (), float(k)) for k in range(draw(st.integers(1, 40)))]
        stale = draw(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(LABELS)),
                              max_size=2))  # fmt: skip
        kind = "backfill" if step < 0 and draw(st.booleans()) else "scrape"
        samples = [Sample(name, labels, value) for name, labels, value in series]
        layout = tuple((s.name, s.labels) for s in samples)
        if layouts.get(sid) == layout:
            layout = layouts[sid]  # the parser hands back the same object, as its cache does
        layouts[sid] = layout
        result = ScrapeResult(target(sid), ts, 0.1, samples, stale=stale, kind=kind,
                              layout=layout)  # fmt: skip
        out.append((result, draw(st.integers(0, 7)) == 0))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scrapes(), st.sampled_from([(-WINDOW, 0.0), (-20.0, 0.0), (-200.0, -10.0), (-5.0, 5.0)]))
def test_a_block_and_a_selection_hold_what_each_scrape_brought(
    sequence: list[tuple[ScrapeResult, bool]], span: tuple[float, float]
) -> None:
    recent = RecentSamples("node", window=WINDOW)
    model = Model(WINDOW)
    for result, look in sequence:
        recent.add(result)
        model.add(result)
        assert model.latest is not None
        if look:
            check(recent, model, model.latest + span[0], model.latest + span[1])
    assert model.latest is not None
    check(recent, model, model.latest + span[0], model.latest + span[1])
    check(recent, model, model.latest - WINDOW, model.latest)
    first = round(sequence[0][0].timestamp, 3)
    assert recent.covered_from() == max(first, model.latest - WINDOW)


def test_a_server_outgrowing_its_rows_and_the_columns_keeps_every_sample() -> None:
    # One server scraped every second (C must grow past 600 columns) that gains a series per
    # scrape (its block of rows moves again and again), beside a quiet one scraped every 15 s.
    recent = RecentSamples("node", window=600)
    model = Model(600)
    for i in range(700):
        samples = [Sample(f"m{k}", (), float(i * 1000 + k)) for k in range(min(i, 250) + 1)]
        for result in [ScrapeResult(target(1), T0 + i, 0.1, samples)] + (
            [ScrapeResult(target(2), T0 + i, 0.1, [Sample("q", (), float(i))])] if i % 15 else []
        ):
            recent.add(result)
            model.add(result)
    assert recent._columns >= 601
    assert recent.covered_from() == T0 + 699 - 600
    check(recent, model, T0, T0 + 699)
    block = recent.select_block([Matcher("__name__", "=", "m0")], T0, T0 + 699)
    assert np.count_nonzero(~np.isnan(block.ts)) == 601  # every scrape of the window


def test_past_the_cell_budget_the_oldest_samples_go_and_covered_from_says_so() -> None:
    recent = RecentSamples("node", window=600)
    recent.MAX_CELLS = 0
    recent.MIN_MAX_COLUMNS = 40
    model = Model(600)
    for i in range(100):
        result = ScrapeResult(target(1), T0 + 5 * i, 0.1, [Sample("a", (), float(i))])
        recent.add(result)
        model.add(result)
    assert recent._columns == 40
    since = recent.covered_from()
    assert since is not None and since > T0 + 5 * 99 - 600
    # Everything from covered_from on is there, as the model has it.
    want = model.series(since, T0 + 5 * 99)
    check_from = recent.select([Matcher("__name__", "=", "a")], since, T0 + 5 * 99)
    assert check_from[0][2] == want[(1, "a", ())][0]
    assert len(check_from[0][2]) == 40


def test_forgotten_servers_give_their_rows_to_new_ones() -> None:
    recent = RecentSamples("node", window=600)
    model = Model(600)
    for sid in (1, 2, 3):
        for i in range(3):
            result = ScrapeResult(target(sid), T0 + 15 * i, 0.1, [Sample("a", (), float(sid))])
            recent.add(result)
            model.add(result)
    rows = len(recent._v)
    recent.forget(2)
    del model.scrapes[2], model.known[2]
    for i in range(3, 6):
        result = ScrapeResult(target(4), T0 + 15 * i, 0.1, [Sample("a", (), 4.0)])
        recent.add(result)
        model.add(result)
    assert len(recent._v) == rows
    check(recent, model, T0, T0 + 15 * 5)


def test_two_targets_with_one_label_set_come_in_server_order() -> None:
    # Two targets given the same instance label hold the same label set: the rows keep an
    # order that does not depend on which server was scraped first.
    recent = RecentSamples("node", window=600)
    for sid in (2, 1):
        t = Target(sid, "same", f"http://10.0.0.{sid}:9190/metrics", 15.0, 10.0,
                   {"instance": "same"})  # fmt: skip
        recent.add(ScrapeResult(t, T0, 0.1, [Sample("a", (), float(sid))]))
    block = recent.select_block([Matcher("__name__", "=", "a")], T0, T0)
    assert block.vs[:, -1].tolist() == [1.0, 2.0]
    assert [vs for _, _, _, vs in recent.select([Matcher("__name__", "=", "a")], T0, T0)] == [
        [1.0],
        [2.0],
    ]
