"""Differential tests: vpsmon's PromQL engine against Debian's Prometheus on the same data.

The generated series (tests/collector/promql_corpus.py) are turned into a TSDB with
`promtool tsdb create-blocks-from openmetrics`, served by a real `prometheus` on 127.0.0.1, and
loaded into our engine; every query of the corpus is asked of both, as instant queries at
several times and as range queries, and the answers must agree within float tolerance.
Staleness markers cannot be written to OpenMetrics, so they are compared through
`promtool test rules`, whose input series notation has `stale`.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.collector import promql_corpus as corpus
from tests.conftest import require_binary
from vpsmon.collector.promql import Engine, MemorySource, PromQLError, Vector, result_json
from vpsmon.collector.promql.notation import expand_values, parse_series

pytestmark = pytest.mark.timeout(300)


class Prometheus:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self.session.get(self.base + path, params=params) as resp:
            body: dict[str, Any] = await resp.json()
            return body


@pytest.fixture(scope="module")
def source() -> MemorySource:
    return corpus.memory_source()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with corpus.run_prometheus(tmp_path_factory.mktemp("prometheus")) as url:
        yield url


@pytest.fixture
async def prometheus(prometheus_url: str) -> AsyncIterator[Prometheus]:
    async with aiohttp.ClientSession() as session:
        yield Prometheus(prometheus_url, session)


# The rule manager's engine shares selector results and subexpression values between the
# queries of one evaluation (selector_cache_ttl): with it on, the corpus' queries (which share
# many subexpressions) are answered partly from values other queries computed, and each query
# is asked twice, the second time wholly from the cache.
CACHE_TTLS = [pytest.param(0.0, id="no-cache"), pytest.param(3600.0, id="selector-cache")]


@pytest.mark.parametrize("cache_ttl", CACHE_TTLS)
async def test_instant_queries_match_prometheus(
    prometheus: Prometheus, source: MemorySource, cache_ttl: float
) -> None:
    engine = Engine(source, selector_cache_ttl=cache_ttl)
    problems: list[str] = []
    non_empty = 0
    times = corpus.INSTANT_TIMES + corpus.boundary_times(corpus.generate())
    for query in corpus.QUERIES:
        for t in times:
            theirs = await prometheus.get("/api/v1/query", query=query, time=f"{t:.3f}")
            assert theirs["status"] == "success", (query, theirs)
            ours = result_json(await engine.instant_query(query, t))
            problems += corpus.compare(f"{query} @ {t}", ours, theirs["data"])
            if cache_ttl:
                again = result_json(await engine.instant_query(query, t))
                problems += corpus.compare(f"{query} @ {t} (cached)", again, theirs["data"])
            non_empty += bool(theirs["data"]["result"])
    assert not problems, "\n".join(problems[:30])
    # Not a vacuous pass: most queries have answers at most of the times.
    assert non_empty > 0.7 * len(corpus.QUERIES) * len(times), non_empty


@pytest.mark.parametrize("cache_ttl", CACHE_TTLS)
async def test_range_queries_match_prometheus(
    prometheus: Prometheus, source: MemorySource, cache_ttl: float
) -> None:
    engine = Engine(source, selector_cache_ttl=cache_ttl)
    problems: list[str] = []
    points = 0
    for query in corpus.RANGE_QUERIES:
        for start, end, step in corpus.RANGES:
            theirs = await prometheus.get(
                "/api/v1/query_range",
                query=query,
                start=f"{start:.3f}",
                end=f"{end:.3f}",
                step=str(step),
            )
            assert theirs["status"] == "success", (query, theirs)
            ours = result_json(await engine.range_query(query, start, end, step))
            problems += corpus.compare(f"{query} [{start}, {end}, {step}]", ours, theirs["data"])
            if cache_ttl:
                again = result_json(await engine.range_query(query, start, end, step))
                problems += corpus.compare(f"{query} (cached)", again, theirs["data"])
            points += sum(len(r["values"]) for r in theirs["data"]["result"])
    assert not problems, "\n".join(problems[:30])
    assert points > 3000, points


async def test_queries_prometheus_refuses_are_refused_by_us_too(
    prometheus: Prometheus, source: MemorySource
) -> None:
    engine = Engine(source)
    t = corpus.START + 1800
    for query in (
        "sum(",
        "rate(dt_memory_bytes)",
        "dt_memory_bytes + on(instance) dt_requests_total",  # many-to-many
        'label_replace(dt_info, "1x", "", "instance", ".*")',
        'label_replace(dt_memory_bytes, "instance", "x", "", "")',  # same labelset twice
        "holt_winters(dt_memory_bytes[5m], 1.5, 0.5)",  # smoothing factor out of range
    ):
        theirs = await prometheus.get("/api/v1/query", query=query, time=str(t))
        assert theirs["status"] == "error", (query, theirs)
        with pytest.raises(PromQLError) as info:
            await engine.instant_query(query, t)
        expected_kind = "parse" if theirs["errorType"] == "bad_data" else "execution"
        assert info.value.kind == expected_kind, (query, theirs, info.value)


STALENESS_SERIES = {
    'svc_up{instance="a"}': "1 1 1 stale _ _ 1 1",
    'svc_up{instance="b"}': "1 1 1 1 1 1 stale",
    'svc_total{instance="a"}': "0 10 20 stale 0 5 15 25",
    'svc_total{instance="b"}': "0+7x7",
}
STALENESS_QUERIES = [
    "svc_up",
    "count(svc_up)",
    "rate(svc_total[3m])",
    "increase(svc_total[5m])",
    "count_over_time(svc_up[4m])",
    "last_over_time(svc_up[4m])",
    "absent(svc_up)",
    "timestamp(svc_total)",
    "changes(svc_total[10m])",
    "max_over_time(svc_up[2m:30s])",
]


async def test_staleness_markers_end_series_as_in_prometheus(tmp_path: Path) -> None:
    """Our answers become promtool test expectations; promtool must agree with all of them."""
    promtool = require_binary("promtool")
    source = MemorySource()
    for series, values in STALENESS_SERIES.items():
        for i, v in enumerate(expand_values(values)):
            if v is not None:
                source.add(parse_series(series), i * 60, v)
    engine = Engine(source)
    tests = []
    for query in STALENESS_QUERIES:
        for minute in range(0, 10):
            result = await engine.instant_query(query, minute * 60)
            if not isinstance(result, Vector):
                continue
            samples = [
                {
                    "labels": _promtool_labels(s.labels),
                    "value": float(s.value),
                }
                for s in result
            ]
            tests.append({"expr": query, "eval_time": f"{minute}m", "exp_samples": samples})
    assert len(tests) == len(STALENESS_QUERIES) * 10
    rules = tmp_path / "empty.rules.yml"
    rules.write_text("groups: []\n")
    test_file = tmp_path / "staleness.test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [rules.name],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {"series": k, "values": v} for k, v in STALENESS_SERIES.items()
                        ],
                        "promql_expr_test": tests,
                    }
                ],
            }
        )
    )
    run = await asyncio.to_thread(
        subprocess.run,
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # The check can fail: a wrong expectation makes promtool exit non-zero.
    tests[0]["exp_samples"] = []
    broken = yaml.safe_load(test_file.read_text())
    broken["tests"][0]["promql_expr_test"] = tests[:1]
    test_file.write_text(yaml.safe_dump(broken))
    run = await asyncio.to_thread(
        subprocess.run,
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode != 0


def _promtool_labels(labels: dict[str, str]) -> str:
    name = labels.get("__name__", "")
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{inner}}}"
