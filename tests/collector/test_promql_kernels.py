"""The numpy kernels (collector/promql/kernels.py) give, row by row, exactly the scalar path's
results (engine.py's one-step code with functions.py): same presence, same bits (or both NaN).

Issue #8: the columnar rule path must not change any PromQL result.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpsmon.collector.promql import kernels
from vpsmon.collector.promql.errors import PromQLError
from vpsmon.collector.promql.functions import RANGE_FUNCTIONS, Window
from vpsmon.collector.storage.query import STALE_NAN, is_stale_marker

T0 = 1_700_000_000_000  # ms

# --- the scalar path, as engine.py runs it for one step ---------------------------------------


def row_samples(ts: Any, vs: Any, i: int) -> tuple[list[float], list[float]]:
    """What the head's select() would give for row i: its cells with a sample, in order."""
    keep = ~np.isnan(ts[i])
    return ts[i][keep].tolist(), vs[i][keep].tolist()


def scalar_instant(
    ts: list[float], vs: list[float], low: float, high: float, want_time: bool
) -> float | None:
    # engine.py vector_selector, n == 1
    if not ts:
        return None
    j = len(ts) - 1 if ts and ts[-1] <= high else bisect_right(ts, high) - 1
    if j < 0 or ts[j] < low:
        return None
    v = vs[j]
    if v != v and is_stale_marker(v):
        return None
    return ts[j] if want_time else v


def scalar_range(name: str, ts: list[float], vs: list[float], window: Window) -> float | None:
    # engine.py matrix_input (markers dropped), then range_function, n == 1
    if any(map(math.isnan, vs)) and any(map(is_stale_marker, vs)):
        keep = [k for k, v in enumerate(vs) if not (v != v and is_stale_marker(v))]
        ts, vs = [ts[k] for k in keep], [vs[k] for k in keep]
    if not ts:
        return None
    low, high = window.start / 1000, window.end / 1000
    if ts[0] < low or ts[-1] > high:
        lo, hi = bisect_left(ts, low), bisect_right(ts, high)
        if lo >= hi:
            return None
        ts, vs = ts[lo:hi], vs[lo:hi]
    return RANGE_FUNCTIONS[name](ts, vs, window)


def bits(v: float) -> bytes:
    return struct.pack("<d", v)


def same(a: float, b: float) -> bool:
    return (a != a and b != b) or bits(a) == bits(b)


def assert_rows_match(
    expected: list[float | None], values: Any, present: Any, what: str = ""
) -> None:
    assert len(expected) == len(values) == len(present)
    for i, want in enumerate(expected):
        got = float(values[i]) if present[i] else None
        if want is None or got is None:
            assert want is got, f"{what} row {i}: scalar {want!r}, kernel {got!r}"
        else:
            assert same(want, got), f"{what} row {i}: scalar {want!r}, kernel {got!r}"


def check_range(name: str, ts: Any, vs: Any, window: Window) -> None:
    expected: list[float | None] = []
    raised: Exception | None = None
    try:
        for i in range(ts.shape[0]):
            expected.append(scalar_range(name, *row_samples(ts, vs, i), window))
    except (PromQLError, ZeroDivisionError) as exc:
        raised = exc
    if raised is not None:
        with pytest.raises(type(raised)):
            kernels.range_function(name, ts, vs, window)
        return
    values, present = kernels.range_function(name, ts, vs, window)
    assert values.shape == present.shape == (ts.shape[0],)
    assert_rows_match(expected, values, present, name)


def check_instant(ts: Any, vs: Any, low: float, high: float) -> None:
    for want_time in (False, True):
        expected = [
            scalar_instant(*row_samples(ts, vs, i), low, high, want_time)
            for i in range(ts.shape[0])
        ]
        values, present = kernels.instant(ts, vs, low, high, want_time)
        assert_rows_match(expected, values, present, f"instant want_time={want_time}")


# --- random blocks ----------------------------------------------------------------------------

SPECIAL = [
    math.nan,
    math.inf,
    -math.inf,
    STALE_NAN,
    STALE_NAN,
    0.0,
    -0.0,
    1e300,
    -1e300,
    2.0**53,
    2.0**53 + 2,
    1e16,
    5e-324,
    0.1,
    -0.1,
    1.7976931348623157e308,
]

plain_values = st.one_of(
    st.integers(-5, 20).map(float),
    st.integers(0, 2**60).map(float),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.5, 1.25, 3.0, 7.0, 100.0, 1e9]),
)
any_value = st.one_of(plain_values, plain_values, plain_values, st.sampled_from(SPECIAL))


@st.composite
def row_values(draw: st.DrawFn, length: int) -> list[float]:
    kind = draw(st.sampled_from(["counter", "counter", "gauge", "constant", "wild", "integers"]))
    if kind == "constant":
        return [draw(any_value)] * length
    if kind == "integers":
        return [float(draw(st.integers(-(2**40), 2**40))) for _ in range(length)]
    if kind == "wild":
        return [draw(any_value) for _ in range(length)]
    out: list[float] = []
    level = draw(st.sampled_from([0.0, 1.0, 1e3, 12345.678, 1e15, -3.0]))
    for _ in range(length):
        if kind == "counter":
            step = draw(st.sampled_from([0.0, 1.0, 0.25, 3.3, 1e6, 17.0]))
            if draw(st.integers(0, 9)) == 0:  # a reset
                level = draw(st.sampled_from([0.0, 1.0, 2.5, -0.0]))
            else:
                level += step
            value = level
        else:
            value = draw(st.floats(-1e3, 1e3, allow_nan=False))
        if draw(st.integers(0, 14)) == 0:
            value = draw(st.sampled_from(SPECIAL))
        out.append(value)
    return out


@st.composite
def blocks(draw: st.DrawFn) -> tuple[Any, Any, list[int]]:
    """A block plus the ms grid its cells sit on (for picking window edges on samples)."""
    rows = draw(st.integers(1, 6))
    width = draw(st.integers(1, 10))
    steps = draw(
        st.lists(st.sampled_from([1, 7, 1000, 14999, 15000, 15000, 15001, 30000]), min_size=width)
    )
    grid = [T0 + sum(steps[:j]) for j in range(width)]
    ts = np.full((rows, width), np.nan)
    vs = np.array(
        [[draw(st.sampled_from([math.nan, STALE_NAN, 1.0, -7.5])) for _ in range(width)]] * rows
    )  # garbage where no sample: must be ignored
    for i in range(rows):
        length = draw(st.integers(0, width))
        start = draw(st.sampled_from([width - length, 0, draw(st.integers(0, width - length))]))
        cells = list(range(start, start + length))
        if length > 2 and draw(st.booleans()):  # holes
            holes = draw(st.sets(st.sampled_from(cells[1:-1])))
            cells = [c for c in cells if c not in holes]
        values = draw(row_values(len(cells)))
        jitter = draw(st.sampled_from([0, 0, 1, -1, 500]))
        # Off the grid a little, still in time order (the block's contract).
        times = sorted(grid[c] + (jitter if 0 < c < width - 1 else 0) for c in cells)
        for c, ms, v in zip(cells, times, values, strict=True):
            ts[i, c] = ms / 1000
            vs[i, c] = v
    layout = draw(st.sampled_from(["C", "F", "view"]))
    if layout == "F":
        ts, vs = np.asfortranarray(ts), np.asfortranarray(vs)
    elif layout == "view":  # a slice of wider matrices, as a head might hand out
        ts = np.concatenate([ts, np.zeros((rows, 2))], axis=1)[:, :width]
        vs = np.concatenate([vs, np.zeros((rows, 2))], axis=1)[:, :width]
    # The head may share its buffers between cycles: a kernel must never write to them.
    ts.setflags(write=False)
    vs.setflags(write=False)
    return ts, vs, grid


@st.composite
def windows(draw: st.DrawFn, grid: list[int], name: str) -> Window:
    edge = st.one_of(
        st.sampled_from(grid),
        st.sampled_from(grid).map(lambda t: t + 1),
        st.sampled_from(grid).map(lambda t: t - 1),
        st.integers(grid[0] - 100_000, grid[-1] + 100_000),
    )
    a, b = draw(edge), draw(edge)
    start, end = min(a, b), max(a, b)
    if start == end:
        end += draw(st.sampled_from([1, 300_000]))
    step_time = end + draw(st.sampled_from([0, 0, 60_000, -5]))
    params: tuple[float, ...] = ()
    if name == "predict_linear":
        params = (draw(st.sampled_from([0.0, 3600.0, 86400.5, -10.0, 1e300])),)
    elif name == "quantile_over_time":
        params = (draw(st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0, 1 / 3, -1.0, 2.0, math.nan])),)
    elif name == "holt_winters":
        params = draw(st.sampled_from([(0.5, 0.5), (0.3, 0.9), (0.1, 0.1), (0.0, 0.5)]))
    return Window(step_time, start, end, end - start, params)


NAMES = sorted(RANGE_FUNCTIONS)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(data=st.data())
def test_every_range_function_gives_the_scalar_results_bit_for_bit(
    name: str, data: st.DataObject
) -> None:
    ts, vs, grid = data.draw(blocks())
    window = data.draw(windows(grid, name))
    check_range(name, ts, vs, window)


@PROPERTY
@given(data=st.data())
def test_the_instant_selector_gives_the_scalar_results_bit_for_bit(data: st.DataObject) -> None:
    ts, vs, grid = data.draw(blocks())
    window = data.draw(windows(grid, "instant"))
    check_instant(ts, vs, window.start / 1000, window.end / 1000)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.floats(allow_nan=False, allow_infinity=False),
                st.floats(-1e3, 1e3),
                st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16, 1.0, 2.0**-60, 3.0]),
            ),
            min_size=1,
            max_size=40,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_an_exact_sum_the_kernel_vouches_for_is_math_fsum(rows: list[list[float]]) -> None:
    width = max(map(len, rows))
    x = np.zeros((len(rows), width))
    for i, row in enumerate(rows):
        x[i, : len(row)] = row
    sums, ok = kernels._exact_sums(x)
    for i, row in enumerate(rows):
        if ok[i]:
            assert bits(float(sums[i])) == bits(math.fsum(row)), row


# --- examples ---------------------------------------------------------------------------------


def block(*rows: list[tuple[float, float]], width: int = 0) -> tuple[Any, Any]:
    """Rows of (seconds after T0, value), left-aligned."""
    width = max(width, *(len(r) for r in rows))
    ts = np.full((len(rows), width), np.nan)
    vs = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        for j, (t, v) in enumerate(row):
            ts[i, j] = (T0 + round(t * 1000)) / 1000
            vs[i, j] = v
    return ts, vs


def window(start_s: float, end_s: float, *params: float) -> Window:
    start, end = T0 + round(start_s * 1000), T0 + round(end_s * 1000)
    return Window(end, start, end, end - start, params)


def test_rate_adds_back_the_value_before_each_counter_reset() -> None:
    ts, vs = block([(0, 10), (15, 20), (30, 5), (45, 15), (60, 2), (75, 12)])
    values, present = kernels.range_function("increase", ts, vs, window(0, 75))
    assert present[0]
    assert values[0] == 12 - 10 + 20 + 15  # two resets: 20 and 15 added back
    check_range("increase", ts, vs, window(0, 75))
    check_range("rate", ts, vs, window(-10, 80))


def test_a_hole_and_a_staleness_marker_inside_a_row_are_skipped() -> None:
    ts, vs = block([(0, 1), (15, 2), (30, STALE_NAN), (45, 8), (60, 9)])
    ts[0, 1] = np.nan  # no sample at 15 s
    for name in NAMES:
        check_range(name, ts, vs, window(0, 60, 0.5, 0.5))
    values, _ = kernels.range_function("count_over_time", ts, vs, window(0, 60))
    assert values[0] == 3


def test_a_staleness_marker_as_newest_sample_hides_the_series_from_the_instant_selector() -> None:
    ts, vs = block([(0, 1), (15, STALE_NAN)], [(0, 1), (15, 4)])
    values, present = kernels.instant(ts, vs, T0 / 1000 - 300, T0 / 1000 + 20)
    assert present.tolist() == [False, True]
    assert values[1] == 4


def test_the_instant_selector_ignores_samples_older_than_the_lookback() -> None:
    ts, vs = block([(0, 1), (100, 2)], [(0, 3)])
    values, present = kernels.instant(ts, vs, T0 / 1000 + 50, T0 / 1000 + 400)
    assert present.tolist() == [True, False]
    assert values[0] == 2
    times, _ = kernels.instant(ts, vs, T0 / 1000 + 50, T0 / 1000 + 400, want_time=True)
    assert times[0] == (T0 + 100_000) / 1000


def test_a_row_with_one_sample_has_no_rate_but_has_a_count() -> None:
    ts, vs = block([(0, 1)], [(0, 1), (15, 2)])
    _, present = kernels.range_function("rate", ts, vs, window(-60, 60))
    assert present.tolist() == [False, True]
    values, present = kernels.range_function("count_over_time", ts, vs, window(-60, 60))
    assert present.tolist() == [True, True]
    assert values.tolist() == [1.0, 2.0]


def test_avg_over_time_of_tenths_is_the_exactly_rounded_mean() -> None:
    # A naive sum gives 0.6000000000000001 / 3; fsum gives 0.6 / 3.
    ts, vs = block([(0, 0.1), (15, 0.2), (30, 0.3)])
    values, _ = kernels.range_function("avg_over_time", ts, vs, window(0, 30))
    assert values[0] == 0.6 / 3
    assert values[0] != (0.1 + 0.2 + 0.3) / 3


def test_max_over_time_keeps_the_first_of_equal_zeros_and_skips_nan() -> None:
    ts, vs = block([(0, math.nan), (15, -0.0), (30, 0.0)], [(0, math.nan)])
    values, present = kernels.range_function("max_over_time", ts, vs, window(0, 30))
    assert present.tolist() == [True, True]
    assert bits(values[0]) == bits(-0.0)
    assert math.isnan(values[1])


def test_holt_winters_with_an_invalid_factor_raises_like_the_scalar_function() -> None:
    ts, vs = block([(0, 1), (15, 2)])
    with pytest.raises(PromQLError):
        kernels.range_function("holt_winters", ts, vs, window(0, 15, 0.0, 0.5))


def test_the_comparison_catches_a_one_ulp_difference_and_a_presence_flip() -> None:
    # The property tests can fail: the helper they use rejects the smallest wrong answer.
    ts, vs = block([(0, 10), (15, 20), (30, 5)])
    w = window(0, 30)
    expected = [scalar_range("rate", *row_samples(ts, vs, 0), w)]
    values, present = kernels.range_function("rate", ts, vs, w)
    assert_rows_match(expected, values, present)
    with pytest.raises(AssertionError):
        assert_rows_match(expected, np.nextafter(values, np.inf), present)
    with pytest.raises(AssertionError):
        assert_rows_match(expected, values, ~present)
    with pytest.raises(AssertionError):  # a rate that forgot the reset
        assert_rows_match(expected, (vs[:, 2] - vs[:, 0]) / 30 * 1.0, present)


def test_rows_of_ordinary_floats_take_the_vectorized_exact_sum() -> None:
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 100, (2000, 41))
    sums, ok = kernels._exact_sums(x)
    assert ok.all()
    assert all(bits(sums[i]) == bits(math.fsum(x[i].tolist())) for i in range(2000) if ok[i])


@pytest.mark.parametrize("name", NAMES)
def test_ordinary_rows_are_computed_without_the_per_row_scalar_fallback(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The vectorized path is what the property tests compare on such rows, and what keeps a
    # rule cycle fast (issue #8): counters with a reset, gauges, a hole, a short row.
    rng = np.random.default_rng(8)
    rows, width = 40, 41
    ts = (T0 + np.arange(width)[None, :] * 15_000 + rng.integers(0, 3000, (rows, 1))) / 1000
    vs = np.cumsum(rng.uniform(0, 1e4, (rows, width)), axis=1).round(3)
    vs[rows // 2 :] = rng.uniform(-5, 8, (rows - rows // 2, width))
    vs[3, 20:] -= vs[3, 19]  # a reset
    ts[4, 10] = np.nan  # a hole
    ts[5, :30] = np.nan  # a short row
    vs[6, 7] = STALE_NAN
    vs[7] = 0.0  # a counter or gauge that stays at zero
    vs[8] = 0.25  # a constant
    fallen: list[int] = []
    original = kernels._fallback

    def spy(name: str, rows_: Any, which: Any, *rest: Any) -> None:
        fallen.extend(which.tolist())
        original(name, rows_, which, *rest)

    monkeypatch.setattr(kernels, "_fallback", spy)
    end = T0 + (width - 1) * 15_000 + 3000
    params = {"predict_linear": (3600.0,), "quantile_over_time": (0.9,)}
    w = Window(end, end - 600_000, end, 600_000, params.get(name, (0.5, 0.5)))
    check_range(name, ts, vs, w)
    assert fallen == []


def test_quantile_over_time_orders_equal_zeros_by_time_as_the_stable_scalar_sort() -> None:
    rows = [
        [(0, 0.0), (15, -0.0), (30, -0.0), (45, 0.0), (60, 1.0)],
        [(0, -0.0), (15, 0.0), (30, 0.0), (45, -0.0), (60, -1.0)],
        [(t, -0.0 if t % 2 else 0.0) for t in range(40)],
    ]
    ts, vs = block(*rows)
    for q in (0.0, 0.1, 0.25, 0.5, 0.6, 0.75, 1.0):
        check_range("quantile_over_time", ts, vs, window(0, 60, q))


def test_a_zero_sum_is_vouched_for_only_when_fsum_would_give_plus_zero() -> None:
    x = np.array([[0.0, 0.0, 0.0], [-0.0, 0.0, 0.0], [-0.0, -0.0, -0.0], [1.0, -1.0, 0.0]])
    sums, ok = kernels._exact_sums(x)
    assert ok.tolist() == [True, False, False, False]
    assert bits(sums[0]) == bits(math.fsum(x[0].tolist()))
    sums, ok = kernels._exact_sums(x, any_zero=True)
    assert ok.all()
    assert all(bits(v) == bits(0.0) for v in sums)


def test_timestamps_and_windows_beyond_2_to_the_52_ms_take_the_scalar_path() -> None:
    # Float milliseconds stop being exact integers there (odd ones round to even past 2**53);
    # the scalar code's int arithmetic is the reference, so those rows or calls fall back.
    base = 2**53 + 1  # ms
    ts = np.array([[(base + 4) / 1000, (base + 15_004) / 1000, (base + 30_002) / 1000]])
    vs = np.array([[1.0, 5.0, 2.0]])
    ts = np.concatenate([ts, np.array([[1.7e9, 1.7e9 + 15, 1.7e9 + 30]])])
    vs = np.concatenate([vs, vs])
    for name in NAMES:
        for end in (base + 30_003, base + 30_005, base + 40_001):
            check_range(name, ts, vs, Window(end, end - 40_001, end, 40_001, (0.5, 0.5)))
        near = 1_700_000_030_001
        check_range(name, ts, vs, Window(near, near - 40_001, near, 40_001, (0.5, 0.5)))


def test_a_zero_range_rate_raises_as_the_scalar_code_does() -> None:
    ts, vs = block([(0, 1), (0.5, 2)])
    check_range("rate", ts, vs, Window(T0, T0, T0 + 500, 0, ()))
    with pytest.raises(ZeroDivisionError):
        kernels.range_function("rate", ts, vs, Window(T0, T0, T0 + 500, 0, ()))
