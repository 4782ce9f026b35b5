"""PromQL engine semantics on an in-memory source (issue #8).

Expected values are worked out by hand from Prometheus' definitions (promql/functions.go,
engine.go at v2.42); tests/collector/test_promql_prometheus.py compares against the real
Prometheus on generated data.
"""

from __future__ import annotations

import math

import pytest

from vpsmon.collector.promql import (
    Engine,
    Matrix,
    MemorySource,
    PromQLError,
    Scalar,
    String,
    Vector,
    format_value,
    parse_expr,
    result_json,
)
from vpsmon.collector.promql.notation import expand_values, parse_series
from vpsmon.collector.storage.query import STALE_NAN


def load(
    source: MemorySource, series: str, values: str, step: float = 60, start: float = 0
) -> None:
    labels = parse_series(series)
    for i, v in enumerate(expand_values(values)):
        if v is not None:
            source.add(labels, start + i * step, v)


def by_labels(result: Vector) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in result}


def one(result: Vector | Matrix | Scalar | String) -> float:
    assert isinstance(result, Vector), result
    assert len(result) == 1, result
    return result[0].value


@pytest.fixture
def source() -> MemorySource:
    src = MemorySource()
    load(src, 'http_requests_total{job="api", instance="a"}', "0+60x10")
    load(src, 'http_requests_total{job="api", instance="b"}', "0+120x10")
    load(src, 'http_requests_total{job="web", instance="a"}', "0+30x10")
    load(src, 'memory_bytes{instance="a"}', "100 200 300 _ _ _ _ _ _ _ 50")
    load(src, 'memory_bytes{instance="b"}', "10 20 stale")
    return src


@pytest.fixture
def engine(source: MemorySource) -> Engine:
    return Engine(source)


async def test_instant_selector_takes_the_newest_sample_within_the_lookback(engine: Engine) -> None:
    result = await engine.instant_query('memory_bytes{instance="a"}', 100)
    assert one(result) == 200
    assert result[0].labels == {"__name__": "memory_bytes", "instance": "a"}
    assert result[0].timestamp == 100
    # The last sample (t=120) is 300 s old at t=420 and still seen; at 421 it is gone.
    assert one(await engine.instant_query('memory_bytes{instance="a"}', 420)) == 300
    assert len(await engine.instant_query('memory_bytes{instance="a"}', 421)) == 0


async def test_a_staleness_marker_ends_the_series_at_once(engine: Engine) -> None:
    assert one(await engine.instant_query('memory_bytes{instance="b"}', 119)) == 20
    assert len(await engine.instant_query('memory_bytes{instance="b"}', 120)) == 0
    assert len(await engine.instant_query('memory_bytes{instance="b"}', 200)) == 0


async def test_matchers_support_all_four_operators_with_anchored_regexes(engine: Engine) -> None:
    got = await engine.instant_query('http_requests_total{job=~"ap", instance!="b"}', 600)
    assert len(got) == 0  # =~ is anchored: "ap" does not match "api"
    got = await engine.instant_query('http_requests_total{job=~"a.*", instance!="b"}', 600)
    assert by_labels(got) == {
        (("__name__", "http_requests_total"), ("instance", "a"), ("job", "api")): 600
    }
    got = await engine.instant_query('http_requests_total{job!~"api|x"}', 600)
    assert [s.labels["job"] for s in got] == ["web"]
    got = await engine.instant_query('{__name__=~"http_.*", job=~"(?i)WEB"}', 600)
    assert [s.labels["job"] for s in got] == ["web"]


async def test_rate_extrapolates_to_the_window_edges_like_prometheus() -> None:
    src = MemorySource()
    load(src, "c", "0+60x10")  # exactly 1 per second
    engine = Engine(src)
    # Window [330, 630] holds 360..600: 240 s sampled, 30 s to each edge (< 1.1 * 60),
    # so the increase is extrapolated to the full 300 s.
    assert one(await engine.instant_query("increase(c[5m])", 630)) == pytest.approx(300)
    assert one(await engine.instant_query("rate(c[5m])", 630)) == pytest.approx(1.0)


async def test_increase_handles_counter_resets_and_does_not_extrapolate_below_zero() -> None:
    src = MemorySource()
    load(src, "c", "0 60 120 10 70")
    engine = Engine(src)
    # 70 - 0 plus the 120 lost at the reset.
    assert one(await engine.instant_query("increase(c[4m])", 240)) == pytest.approx(190)
    assert one(await engine.instant_query("resets(c[4m])", 240)) == 1

    src = MemorySource()
    load(src, "c", "30+60x3", start=60)  # 30, 90, 150, 210 at 60..240
    engine = Engine(src)
    # 180 over 180 s; the start would extrapolate 60 s back but the counter reaches zero
    # 30 s before the first sample, so only 30 s are added: 180 * 210 / 180.
    assert one(await engine.instant_query("increase(c[4m])", 240)) == pytest.approx(210)


async def test_irate_idelta_delta_deriv_and_predict_linear() -> None:
    src = MemorySource()
    load(src, "c", "0 10 30 5")
    load(src, "g", "1+2x4")
    engine = Engine(src)
    assert one(await engine.instant_query("irate(c[5m])", 180)) == pytest.approx(5 / 60)
    assert one(await engine.instant_query("idelta(c[5m])", 180)) == pytest.approx(-25)
    assert one(await engine.instant_query("delta(g[4m])", 240)) == pytest.approx(8)
    assert one(await engine.instant_query("deriv(g[4m])", 240)) == pytest.approx(2 / 60)
    # Double exponential smoothing of a straight line follows the line.
    got = await engine.instant_query("holt_winters(g[4m], 0.5, 0.5)", 240)
    assert one(got) == pytest.approx(9)
    got = await engine.instant_query("predict_linear(g[4m], 600)", 240)
    assert one(got) == pytest.approx(9 + 20)
    assert one(await engine.instant_query("changes(c[5m])", 180)) == 3


async def test_over_time_functions(engine: Engine) -> None:
    q = '{}(memory_bytes{{instance="a"}}[3m])'
    expected = {
        "avg_over_time": 200,
        "min_over_time": 100,
        "max_over_time": 300,
        "sum_over_time": 600,
        "count_over_time": 3,
        "last_over_time": 300,
        "present_over_time": 1,
        "stdvar_over_time": 20000 / 3,
        "stddev_over_time": math.sqrt(20000 / 3),
    }
    for fn, value in expected.items():
        assert one(await engine.instant_query(q.format(fn), 180)) == pytest.approx(value), fn
    got = await engine.instant_query('quantile_over_time(0.5, memory_bytes{instance="a"}[3m])', 180)
    assert one(got) == 200
    last = await engine.instant_query('last_over_time(memory_bytes{instance="a"}[3m])', 180)
    assert last[0].labels["__name__"] == "memory_bytes"  # the one that keeps the name
    avg = await engine.instant_query('avg_over_time(memory_bytes{instance="a"}[3m])', 180)
    assert "__name__" not in avg[0].labels


async def test_range_selectors_skip_staleness_markers_and_include_both_edges(
    engine: Engine,
) -> None:
    result = await engine.instant_query('memory_bytes{instance="b"}[3m]', 120)
    assert isinstance(result, Matrix)
    assert result[0].values == [10, 20]
    result = await engine.instant_query('memory_bytes{instance="a"}[2m]', 120)
    assert result[0].timestamps == [0, 60, 120]


async def test_aggregations_by_and_without(engine: Engine) -> None:
    got = await engine.instant_query("sum by (job) (http_requests_total)", 600)
    assert by_labels(got) == {(("job", "api"),): 1800, (("job", "web"),): 300}
    got = await engine.instant_query("max without (instance) (http_requests_total)", 600)
    assert by_labels(got) == {(("job", "api"),): 1200, (("job", "web"),): 300}
    got = await engine.instant_query("avg(http_requests_total)", 600)
    assert by_labels(got) == {(): 700}
    got = await engine.instant_query("count by (instance) (http_requests_total)", 600)
    assert by_labels(got) == {(("instance", "a"),): 2, (("instance", "b"),): 1}
    got = await engine.instant_query("group by (job) (http_requests_total)", 600)
    assert set(by_labels(got).values()) == {1}
    got = await engine.instant_query("stddev(http_requests_total)", 600)
    assert one(got) == pytest.approx(math.sqrt(((600 - 700) ** 2 + 500**2 + 400**2) / 3))
    got = await engine.instant_query("quantile(0.5, http_requests_total)", 600)
    assert one(got) == 600
    got = await engine.instant_query("min(http_requests_total)", 600)
    assert one(got) == 300


async def test_topk_bottomk_and_count_values(engine: Engine) -> None:
    got = await engine.instant_query("topk(2, http_requests_total)", 600)
    assert [s.value for s in got] == [1200, 600]
    assert got[0].labels["__name__"] == "http_requests_total"
    got = await engine.instant_query("bottomk by (job) (1, http_requests_total)", 600)
    assert sorted(s.value for s in got) == [300, 600]
    got = await engine.instant_query('count_values("v", memory_bytes)', 60)
    assert by_labels(got) == {(("v", "200"),): 1, (("v", "20"),): 1}
    got = await engine.instant_query("topk(0, http_requests_total)", 600)
    assert len(got) == 0


async def test_arithmetic_drops_the_metric_name_and_follows_ieee(engine: Engine) -> None:
    got = await engine.instant_query('memory_bytes{instance="a"} * 2', 60)
    assert got[0].labels == {"instance": "a"} and got[0].value == 400
    got = await engine.instant_query('memory_bytes{instance="a"} / 0', 60)
    assert got[0].value == math.inf
    got = await engine.instant_query('(memory_bytes{instance="a"} - 200) / 0', 60)
    assert math.isnan(got[0].value)
    assert (await engine.instant_query("2 ^ 10 % 7", 0)).value == 2  # type: ignore[union-attr]
    assert (await engine.instant_query("-1 ^ 0.5", 0)).value == -1  # type: ignore[union-attr]
    assert (await engine.instant_query("0 ^ -1", 0)).value == math.inf  # type: ignore[union-attr]


async def test_comparisons_filter_or_return_bool(engine: Engine) -> None:
    got = await engine.instant_query("http_requests_total > 500", 600)
    assert sorted(s.value for s in got) == [600, 1200]
    assert all(s.labels["__name__"] == "http_requests_total" for s in got)
    got = await engine.instant_query("http_requests_total > bool 500", 600)
    assert sorted(s.value for s in got) == [0, 1, 1]
    assert all("__name__" not in s.labels for s in got)
    got = await engine.instant_query("500 < http_requests_total", 600)
    assert sorted(s.value for s in got) == [600, 1200]  # the vector's value is kept
    assert (await engine.instant_query("1 < bool 2", 0)).value == 1  # type: ignore[union-attr]


async def test_vector_matching_with_on_ignoring_and_group_left() -> None:
    src = MemorySource()
    load(src, 'errors{job="api", instance="a", code="500"}', "6")
    load(src, 'errors{job="api", instance="a", code="404"}', "3")
    load(src, 'requests{job="api", instance="a"}', "60")
    load(src, 'info{instance="a", region="eu"}', "1")
    engine = Engine(src)
    got = await engine.instant_query("errors / ignoring(code) group_left requests", 0)
    assert by_labels(got) == {
        (("code", "404"), ("instance", "a"), ("job", "api")): 0.05,
        (("code", "500"), ("instance", "a"), ("job", "api")): 0.1,
    }
    got = await engine.instant_query("requests * on(instance) group_left(region) info", 0)
    assert by_labels(got) == {(("instance", "a"), ("job", "api"), ("region", "eu")): 60}
    got = await engine.instant_query("info * on(instance) group_right(region) requests", 0)
    assert by_labels(got) == {(("instance", "a"), ("job", "api"), ("region", "eu")): 60}
    got = await engine.instant_query("requests > on(instance) info", 0)
    assert by_labels(got) == {(("instance", "a"),): 60}
    with pytest.raises(PromQLError, match="many-to-many matching not allowed"):
        await engine.instant_query("requests / ignoring(code) errors", 0)
    with pytest.raises(PromQLError, match="many-to-one matching must be explicit"):
        await engine.instant_query("errors / on(job) requests", 0)


async def test_set_operators(engine: Engine) -> None:
    got = await engine.instant_query(
        'http_requests_total and on(instance) memory_bytes{instance="a"}', 60
    )
    assert {s.labels["job"] for s in got} == {"api", "web"}
    got = await engine.instant_query(
        'http_requests_total unless on(instance) memory_bytes{instance="a"}', 60
    )
    assert [s.labels["instance"] for s in got] == ["b"]
    got = await engine.instant_query('memory_bytes or http_requests_total{job="web"}', 60)
    assert len(got) == 3


async def test_offset_and_at_modifiers(engine: Engine) -> None:
    assert one(await engine.instant_query('memory_bytes{instance="a"} offset 1m', 120)) == 200
    assert one(await engine.instant_query('memory_bytes{instance="a"} @ 60', 600)) == 200
    assert (
        one(await engine.instant_query('memory_bytes{instance="a"} @ 120 offset 1m', 9999)) == 200
    )
    result = await engine.range_query('memory_bytes{instance="a"} @ end()', 0, 120, 60)
    assert result[0].values == [300, 300, 300]
    got = await engine.instant_query(
        'increase(http_requests_total{instance="b"}[2m] offset 2m)', 600
    )
    assert one(got) == pytest.approx(240)
    got = await engine.instant_query('timestamp(memory_bytes{instance="a"})', 150)
    assert one(got) == 120


async def test_range_query_returns_one_point_per_step_sorted_by_labels(engine: Engine) -> None:
    result = await engine.range_query("memory_bytes", 0, 600, 120)
    assert [s.labels["instance"] for s in result] == ["a", "b"]
    a, b = result
    # a: gap after 120 s; seen until 420 by the lookback, then the sample at 600.
    assert a.timestamps == [0, 120, 240, 360, 600]
    assert a.values == [100, 300, 300, 300, 50]
    assert b.timestamps == [0]
    scalar = await engine.range_query("time()", 0, 120, 60)
    assert scalar[0].labels == {} and scalar[0].values == [0, 60, 120]


async def test_subqueries_evaluate_on_their_own_aligned_steps() -> None:
    src = MemorySource()
    load(src, "c", "0+60x5 420+120x5")  # 1/s for 5 minutes, then 2/s
    engine = Engine(src)
    # rate(c[2m]) on the steps 180..480 (both ends included): 1 1 1 1.5 2 2
    got = await engine.instant_query("max_over_time(rate(c[2m])[5m:1m])", 480)
    assert one(got) == pytest.approx(2.0)
    got = await engine.instant_query("min_over_time(rate(c[2m])[5m:1m])", 480)
    assert one(got) == pytest.approx(1.0)
    got = await engine.instant_query("avg_over_time(rate(c[2m])[5m:1m])", 480)
    assert one(got) == pytest.approx(8.5 / 6)
    matrix = await engine.instant_query("c[5m:2m]", 601)
    assert isinstance(matrix, Matrix)
    assert matrix[0].timestamps == [360, 480, 600]


async def test_absent_and_absent_over_time_carry_the_equality_labels(engine: Engine) -> None:
    got = await engine.instant_query('absent(nothing{job="x", instance=~"a"})', 60)
    assert got[0].labels == {"job": "x"} and got[0].value == 1
    assert len(await engine.instant_query("absent(memory_bytes)", 60)) == 0
    got = await engine.instant_query('absent_over_time(nothing{job="x"}[5m])', 60)
    assert got[0].labels == {"job": "x"}
    result = await engine.range_query('absent(memory_bytes{instance="b"})', 0, 180, 60)
    assert result[0].timestamps == [120, 180]


async def test_label_replace_and_label_join_follow_go_expansion(engine: Engine) -> None:
    q = 'label_replace(memory_bytes{instance="a"}, "host", "h-$1-${1}x-$1x", "instance", "(.*)")'
    got = await engine.instant_query(q, 0)
    assert got[0].labels["host"] == "h-a-ax-"  # $1x names a group "1x", which is empty
    q = 'label_replace(memory_bytes{instance="a"}, "host", "$1", "instance", "zzz")'
    assert "host" not in (await engine.instant_query(q, 0))[0].labels
    q = 'label_join(memory_bytes{instance="a"}, "id", "/", "__name__", "instance")'
    assert (await engine.instant_query(q, 0))[0].labels["id"] == "memory_bytes/a"
    with pytest.raises(PromQLError, match="invalid destination label name"):
        await engine.instant_query('label_replace(memory_bytes, "1bad", "", "a", "")', 0)


async def test_histogram_quantile_interpolates_within_buckets() -> None:
    src = MemorySource()
    for le, count in (("0.1", 50), ("0.5", 90), ("1", 100), ("+Inf", 100)):
        load(src, f'latency_bucket{{job="api", le="{le}"}}', str(count))
    engine = Engine(src)
    got = await engine.instant_query("histogram_quantile(0.5, latency_bucket)", 0)
    assert got[0].labels == {"job": "api"}
    assert got[0].value == pytest.approx(0.1)
    got = await engine.instant_query("histogram_quantile(0.7, latency_bucket)", 0)
    assert got[0].value == pytest.approx(0.1 + 0.4 * (20 / 40))
    got = await engine.instant_query("histogram_quantile(0.99, latency_bucket)", 0)
    assert got[0].value == pytest.approx(0.5 + 0.5 * (9 / 10))
    got = await engine.instant_query("histogram_quantile(1.5, latency_bucket)", 0)
    assert got[0].value == math.inf


async def test_math_date_and_conversion_functions(engine: Engine) -> None:
    cases = {
        "abs(vector(-2))": 2,
        "ceil(vector(1.2))": 2,
        "floor(vector(-1.2))": -2,
        "round(vector(2.5))": 3,
        "round(vector(2.44), 0.1)": 2.4,
        "sqrt(vector(16))": 4,
        "exp(vector(0))": 1,
        "ln(vector(1))": 0,
        "log2(vector(8))": 3,
        "log10(vector(1000))": 3,
        "sgn(vector(-3))": -1,
        "clamp(vector(5), 0, 3)": 3,
        "clamp_min(vector(-5), 0)": 0,
        "clamp_max(vector(5), 1)": 1,
        "year(vector(1700000000))": 2023,
        "month(vector(1700000000))": 11,
        "day_of_month(vector(1700000000))": 14,
        "day_of_week(vector(1700000000))": 2,
        "day_of_year(vector(1700000000))": 318,
        "days_in_month(vector(1700000000))": 30,
        "hour(vector(1700000000))": 22,
        "minute(vector(1700000000))": 13,
    }
    for expr, value in cases.items():
        assert one(await engine.instant_query(expr, 0)) == pytest.approx(value), expr
    assert one(await engine.instant_query("ln(vector(0))", 0)) == -math.inf
    assert math.isnan(one(await engine.instant_query("sqrt(vector(-1))", 0)))
    assert one(await engine.instant_query("hour()", 3600 * 5)) == 5
    assert (await engine.instant_query('scalar(memory_bytes{instance="a"})', 0)).value == 100  # type: ignore[union-attr]
    assert math.isnan((await engine.instant_query("scalar(memory_bytes)", 0)).value)  # type: ignore[union-attr]
    assert (await engine.instant_query("time()", 12.5)).value == 12.5  # type: ignore[union-attr]
    result = await engine.instant_query('"hello"', 3)
    assert isinstance(result, String) and result.value == "hello"


async def test_sort_orders_instant_results(engine: Engine) -> None:
    got = await engine.instant_query("sort(http_requests_total)", 600)
    assert [s.value for s in got] == [300, 600, 1200]
    got = await engine.instant_query("sort_desc(http_requests_total)", 600)
    assert [s.value for s in got] == [1200, 600, 300]


async def test_same_labelset_after_dropping_names_is_an_error() -> None:
    src = MemorySource()
    load(src, 'a{x="1"}', "1 2")
    load(src, 'b{x="1"}', "2 3")
    engine = Engine(src)
    with pytest.raises(PromQLError, match="same labelset") as info:
        await engine.instant_query('abs({__name__=~"a|b"})', 0)
    assert info.value.kind == "execution"
    with pytest.raises(PromQLError, match="same labelset"):
        await engine.instant_query('rate({__name__=~"a|b"}[5m])', 60)


async def test_syntax_errors_and_unsupported_functions_are_parse_errors(engine: Engine) -> None:
    for expr in ("sum(", "rate(x)", "foo(bar)", "x +", ""):
        with pytest.raises(PromQLError) as info:
            await engine.instant_query(expr, 0)
        assert info.value.kind == "parse", expr
        assert str(info.value).startswith(("parse error", "1:")), str(info.value)
    with pytest.raises(PromQLError, match="not supported") as info:
        parse_expr("histogram_count(x)")
    assert info.value.position == 0
    assert str(info.value).startswith("1:1: parse error: function 'histogram_count'")
    with pytest.raises(PromQLError, match="not supported") as info:
        parse_expr("sum(x) + mad_over_time(y[5m])")
    assert info.value.position == 9
    with pytest.raises(PromQLError, match="invalid expression type"):
        await engine.range_query("memory_bytes[5m]", 0, 60, 15)
    with pytest.raises(PromQLError, match="Scalar value NaN overflows int64"):
        await engine.instant_query("topk(scalar(nothing), memory_bytes)", 0)


def test_series_notation_expands_like_promtool() -> None:
    values = expand_values("0+10x2 _ stale 5 1-1x2 _x2 3x1")
    assert values[:4] == [0, 10, 20, None]
    assert values[4] is not None and math.isnan(values[4])
    assert values[5:] == [5, 1, 0, -1, None, None, 3, 3]
    assert values[4] is not None and str(values[4]) == str(STALE_NAN)
    assert parse_series('up{job="a"}') == {"__name__": "up", "job": "a"}


async def test_regexes_are_re2_as_in_prometheus_and_never_backtrack(engine: Engine) -> None:
    for expr in (
        'memory_bytes{instance=~"((?i)A)"}',  # an inline flag inside a group (Go allows it)
        'memory_bytes{instance=~"[[:^alpha:]b]"}',  # a negated POSIX class
    ):
        got = await engine.instant_query(expr, 0)
        assert [s.labels["instance"] for s in got] == (["b"] if "alpha" in expr else ["a"]), expr
    # Exponential for a backtracking engine; RE2 answers at once (pytest-timeout guards this).
    hostile = 'label_replace(vector(1), "x", "$1", "y", "(a+)+b")'
    assert one(await engine.instant_query(hostile, 0)) == 1
    src = MemorySource()
    load(src, f'm{{v="{"a" * 5000}"}}', "1")
    got = await Engine(src).instant_query('m{v=~"(a+)+b"}', 0)
    assert len(got) == 0
    got = await Engine(src).instant_query('m{v=~"(a|aa)+"}', 0)
    assert len(got) == 1
    with pytest.raises(PromQLError, match="illegal regex") as info:
        await engine.instant_query('memory_bytes{instance=~"("}', 0)
    assert info.value.kind == "parse"


def test_values_are_formatted_like_prometheus() -> None:
    assert format_value(1.0) == "1"
    assert format_value(0.1) == "0.1"
    assert format_value(1e21) == "1000000000000000000000"
    assert format_value(1.5e-7) == "0.00000015"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    data = result_json(Vector())
    assert data == {"resultType": "vector", "result": []}
    assert result_json(Scalar(2.0, 1.5)) == {"resultType": "scalar", "result": [1.5, "2"]}


@pytest.mark.parametrize(
    ("expr", "position"),
    [
        ("sum(rate(x[5m])", 3),
        ("x)", 1),
        ('x{a="b"', 7),
        ('x{a="("} + (y', 11),
        ("up + nosuch(x)", 5),
    ],
)
def test_parse_errors_point_at_the_offending_character(expr: str, position: int) -> None:
    with pytest.raises(PromQLError) as info:
        parse_expr(expr)
    assert info.value.position == position
    assert str(info.value).startswith(f"1:{position + 1}: parse error: ")


async def test_a_query_loading_too_many_samples_is_refused(source: MemorySource) -> None:
    engine = Engine(source, max_samples=100)
    with pytest.raises(PromQLError, match="too many samples") as info:
        await engine.range_query("http_requests_total", 0, 600, 1)
    assert info.value.kind == "execution"
    assert len(await engine.instant_query("http_requests_total", 600)) == 3


async def test_shared_subexpressions_answer_as_if_computed_again(source: MemorySource) -> None:
    # The rule manager's engine shares subexpression values between queries at one time.
    shared = Engine(source, selector_cache_ttl=60)
    fresh = Engine(source)
    t = 600
    for query in (
        "sum by (job) (rate(http_requests_total[5m]))",
        "sum by (job) (rate(http_requests_total[5m])) > 0.6",  # the inner sum from the cache
        "sum by (job) (rate(http_requests_total[5m])) > bool 0.6",
        "memory_bytes * 0",
        "memory_bytes * -0",  # equal to 0 and hashed alike, but not the same answer
        "-(memory_bytes * 0)",
    ):
        want = result_json(await fresh.instant_query(query, t))
        assert result_json(await shared.instant_query(query, t)) == want, query
        assert result_json(await shared.instant_query(query, t)) == want, query
    assert (
        result_json(await shared.instant_query("memory_bytes * -0", t))["result"][0]["value"][1]
        == "-0"
    )
    # A range query at other steps does not take an instant value of the same expression.
    ranged = await shared.range_query("sum(rate(http_requests_total[5m]))", 300, 600, 60)
    assert ranged == await fresh.range_query("sum(rate(http_requests_total[5m]))", 300, 600, 60)


async def test_a_shared_subexpression_still_counts_towards_the_sample_limit(
    source: MemorySource,
) -> None:
    # Alone the subexpression fits in the limit; twice in one query it does not. Served the
    # second time from the cache, its samples must still count.
    query = "sum(rate(http_requests_total[5m]))"
    for ttl in (0.0, 60.0):
        engine = Engine(source, selector_cache_ttl=ttl, max_samples=20)
        await engine.instant_query(query, 600)
        with pytest.raises(PromQLError, match="too many samples"):
            await engine.instant_query(f"{query} + {query}", 600)


@pytest.mark.parametrize("columnar", [True, False], ids=["columnar", "step-wise"])
async def test_regression_over_values_whose_products_overflow_both_ways_is_nan_not_an_error(
    columnar: bool,
) -> None:
    # x*y products reach +Inf and -Inf: math.fsum raises on "-inf + inf"; Go's Kahan sums give
    # NaN, and so must we (it raised ValueError before).
    source = MemorySource()
    for i, v in enumerate([1e308, -1e308, 1e308, -1e308, 1e308]):
        source.add({"__name__": "g"}, 1000 + 15 * i, v)
    engine = Engine(source, 300, columnar=columnar)
    for query in ("predict_linear(g[5m], 3600)", "deriv(g[5m])"):
        value = await engine.instant_query(query, 1060)
        assert isinstance(value, Vector)
        assert len(value) == 1 and math.isnan(value[0].value), (query, value)
