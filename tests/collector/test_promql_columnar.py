"""The columnar evaluator (collector/promql/columnar.py) gives exactly what the step-wise
evaluator gives: the same series, bit-identical values, the same errors.

Instant queries over the differential corpus' data (counter resets, NaN, gaps, jitter, a
series that ends, histograms, info metrics) and the benchmark's 200 distinct rule
expressions, asked of `Engine(columnar=True)` and `Engine(columnar=False)`.
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path

import pytest

from tests.collector import promql_corpus as corpus
from vpsmon.collector.promql import Engine, MemorySource, PromQLError, Scalar, Vector
from vpsmon.collector.promql.values import Value

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from distinct_rules import distinct_rules  # noqa: E402


def _bits(v: float) -> bytes:
    return b"nan" if math.isnan(v) else struct.pack("<d", v)


def _canonical(value: Value) -> object:
    if isinstance(value, Scalar):
        return ("scalar", _bits(value.value))
    assert isinstance(value, Vector), type(value)
    return sorted((tuple(sorted(s.labels.items())), _bits(s.value)) for s in value.samples)


async def _both(source: MemorySource, query: str, t: float, cache: float) -> tuple[object, object]:
    out = []
    for columnar in (True, False):
        engine = Engine(source, 300, selector_cache_ttl=cache, columnar=columnar)
        try:
            out.append(_canonical(await engine.instant_query(query, t)))
        except PromQLError as err:
            out.append(("error", str(err)))
    return out[0], out[1]


@pytest.fixture(scope="module")
def corpus_source() -> MemorySource:
    return corpus.memory_source()  # type: ignore[no-any-return]


@pytest.mark.parametrize("cache", [0.0, 5.0], ids=["no-cache", "cache"])
async def test_columnar_instant_queries_equal_the_step_wise_ones_bit_for_bit(
    corpus_source: MemorySource, cache: float
) -> None:
    times = corpus.INSTANT_TIMES + corpus.boundary_times(corpus.generate())
    problems = []
    compared = 0
    for query in corpus.QUERIES:
        for t in times:
            ours, reference = await _both(corpus_source, query, t, cache)
            compared += ours != []
            if ours != reference:
                problems.append(
                    f"{query} @ {t}: columnar {ours!r:.300} step-wise {reference!r:.300}"
                )
    assert not problems, "\n".join(problems[:20])
    assert compared > 0.7 * len(corpus.QUERIES) * len(times)


def _fleet_source() -> MemorySource:
    """A small fleet with the distinct rule set's metrics (bench/distinct_rules.py)."""
    import random

    from distinct_rules import ExtraSeries

    source = MemorySource()
    rng = random.Random(3)
    t0 = 1_700_000_000.0
    for i in range(12):
        extra = ExtraSeries(random.Random(i), t0)
        base = {"job": "node", "instance": f"srv-{i:04d}"}
        previous = None
        for k in range(41):
            t = t0 + 15 * k + rng.choice((0.0, 0.25, -0.125))
            if rng.random() < 0.05 and k:
                continue  # a failed scrape
            for sample in extra.samples(t, previous):
                labels = {**base, **dict(sample.labels), "__name__": sample.name}
                source.add(labels, t, sample.value)
            for name, value in (("up", 1.0), ("node_load1", rng.uniform(0, 4)),
                                ("node_memory_MemAvailable_bytes", rng.uniform(1e8, 4e9)),
                                ("node_memory_MemTotal_bytes", 4e9),
                                ("scrape_duration_seconds", rng.uniform(0, 0.1)),
                                ("scrape_samples_scraped", 90.0)):  # fmt: skip
                source.add({**base, "__name__": name}, t, value)
            previous = t
    return source


@pytest.mark.parametrize("calm", [True, False], ids=["quiet", "firing"])
async def test_columnar_rule_expressions_equal_the_step_wise_ones(calm: bool) -> None:
    source = _fleet_source()
    t = 1_700_000_000.0 + 15 * 40
    problems = []
    for query in distinct_rules(200, calm):
        for cache in (0.0, 5.0):
            ours, reference = await _both(source, query, t, cache)
            if ours != reference:
                problems.append(f"{query}: columnar {ours!r:.300} step-wise {reference!r:.300}")
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("calm", [True, False], ids=["quiet", "firing"])
async def test_rule_expressions_over_the_head_equal_the_step_wise_ones(calm: bool) -> None:
    """The collector's path: the head's RangeBlocks through StorageReader (bench/rules.py's
    fleet, fed scrape by scrape into a real Head), two evaluations so plans kept from the
    first are used by the second."""
    import random

    from promql import END

    from rules import head_source

    source = await head_source(random.Random(2), 12)
    columnar = Engine(source, 300, selector_cache_ttl=5.0)
    stepwise = Engine(source, 300, selector_cache_ttl=5.0, columnar=False)
    problems = []
    for _cycle in range(2):
        for engine in (columnar, stepwise):
            assert engine.cache is not None
            engine.cache.entries.clear()
        for query in distinct_rules(200, calm):
            ours = _canonical(await columnar.instant_query(query, END))
            reference = _canonical(await stepwise.instant_query(query, END))
            if ours != reference:
                problems.append(f"{query}: columnar {ours!r:.300} step-wise {reference!r:.300}")
    assert not problems, "\n".join(problems[:20])
    assert columnar.plans.entries, "label plans were kept"


async def test_errors_are_the_step_wise_errors(corpus_source: MemorySource) -> None:
    t = corpus.START + 1800
    both = (
        'dt_memory_bytes or on (__name__) label_replace(dt_memory_bytes, "__name__", "x", "", "")'  # noqa: E501
    )
    for query in (
        # the name dropped makes two series equal
        f"-({both})",
        f"({both}) / 2",
        # several right-hand series in one match group
        "dt_memory_bytes + on (job) dt_memory_bytes",
        # two left-hand series in one match group, one-to-one
        "dt_requests_total > on (instance) dt_memory_bytes * 0",
    ):
        ours, reference = await _both(corpus_source, query, t, 0.0)
        assert ours == reference, query
        assert ours[0] == "error", (query, ours)


def test_label_plans_stay_bounded_under_series_churn_and_keep_what_is_used() -> None:
    from vpsmon.collector.promql.columnar import Plans

    plans = Plans()
    plans.MAX_ROWS = 1_000
    used = tuple(((("__name__", "up"), ("instance", f"i{i}")),) for i in range(10))
    builds = 0

    def build() -> str:
        nonlocal builds
        builds += 1
        return "plan"

    for cycle in range(500):
        for keys in used:  # what every cycle reads: built once, kept
            plans.get((keys,), "tag", True, build)
        # a churning selection: new label sets (a new keys object) every cycle
        churn = tuple(((("__name__", "c"), ("n", f"{cycle}-{i}")),) for i in range(50))
        plans.get((churn,), "tag", True, build)
    assert builds == len(used) + 500
    kept = len(plans.entries) + len(plans.previous)
    # Two generations of at most MAX_ROWS rows: ~19 churned plans (51 rows each) and the 10
    # used ones in each, against 510 plans if nothing were dropped.
    assert kept <= 2 * (1_000 // 51 + len(used)), kept
    assert plans.get((used[0],), "tag", True, lambda: "rebuilt") == "plan"
