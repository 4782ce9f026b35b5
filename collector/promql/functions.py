"""PromQL functions over one series' window of samples, and the function tables.

Each range function follows Prometheus v2.42's promql/functions.go exactly (same order of float
operations where it matters, same special cases), so results match within float tolerance.
A window is the samples of one series inside [window start, window end], oldest first, with
staleness markers already removed. Sample times are float seconds as the source gives them
(whole milliseconds); durations are computed in integer milliseconds, as Prometheus does.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

from vpsmon.collector.promql import mathops
from vpsmon.collector.promql.errors import PromQLError

NAN = math.nan


@dataclass(slots=True)
class Window:
    """Where a range function is evaluated: the step time and the selected range."""

    step_time: int  # ms, the evaluation time (enh.Ts)
    start: int  # ms, range start (inclusive)
    end: int  # ms, range end (inclusive)
    range: int  # ms, the selector's range (ms.Range)
    params: tuple[float, ...] = ()  # scalar arguments at this step


RangeFunction = Callable[[list[float], list[float], Window], float | None]


def kahan_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    t = total + inc
    if abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


def extrapolated_rate(
    ts: list[float], vs: list[float], w: Window, is_counter: bool, is_rate: bool
) -> float | None:
    """Prometheus' extrapolatedRate (rate, increase, delta)."""
    if len(vs) < 2:
        return None
    result = vs[-1] - vs[0]
    if is_counter:
        prev = vs[0]
        for cur in vs[1:]:
            if cur < prev:
                result += prev
            prev = cur
    first, last = round(ts[0] * 1000), round(ts[-1] * 1000)
    duration_to_start = (first - w.start) / 1000
    duration_to_end = (w.end - last) / 1000
    sampled_interval = (last - first) / 1000
    average_between = sampled_interval / (len(vs) - 1)
    if is_counter and result > 0 and vs[0] >= 0:
        duration_to_zero = sampled_interval * (vs[0] / result)
        if duration_to_zero < duration_to_start:
            duration_to_start = duration_to_zero
    threshold = average_between * 1.1
    extrapolate_to = sampled_interval
    extrapolate_to += duration_to_start if duration_to_start < threshold else average_between / 2
    extrapolate_to += duration_to_end if duration_to_end < threshold else average_between / 2
    factor = mathops.div(extrapolate_to, sampled_interval)
    if is_rate:
        factor /= w.range / 1000
    return result * factor


def instant_value(ts: list[float], vs: list[float], is_rate: bool) -> float | None:
    """Prometheus' instantValue (irate, idelta)."""
    if len(vs) < 2:
        return None
    last, previous = vs[-1], vs[-2]
    if is_rate and last < previous:
        result = last
    else:
        result = last - previous
    interval = round(ts[-1] * 1000) - round(ts[-2] * 1000)
    if interval == 0:
        return None
    if is_rate:
        result /= interval / 1000
    return result


def _all_finite(vs: list[float]) -> bool:
    return all(map(math.isfinite, vs))


def _fsum(values: list[float]) -> float | None:
    """Exactly rounded sum of finite values; None when an intermediate sum overflows, or when
    values made from finite ones are not (linear_regression's x*y products can reach +Inf and
    -Inf, and fsum raises on "-inf + inf"): the caller's Kahan loop then gives Go's answer."""
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        return None


def linear_regression(ts: list[float], vs: list[float], intercept_time: int) -> tuple[float, float]:
    """Least squares over the window, with x in seconds from ``intercept_time`` (ms).

    Prometheus sums with Kahan compensation; for finite values we sum exactly rounded
    (math.fsum, in C), which agrees to the last bits and is many times faster in Python.
    """
    init_y = vs[0]
    if init_y == init_y and vs.count(init_y) == len(vs):  # constant (NaN never is)
        if math.isinf(init_y):
            return NAN, NAN
        return 0.0, init_y
    n = float(len(vs))
    xs = [(round(t * 1000) - intercept_time) / 1e3 for t in ts]
    exact: list[float] = []
    if _all_finite(vs):
        for values in (xs, vs, list(map(operator.mul, xs, vs)), list(map(operator.mul, xs, xs))):
            total = _fsum(values)
            if total is None:
                break
            exact.append(total)
    if len(exact) == 4:
        sum_x, sum_y, sum_xy, sum_x2 = exact
    else:
        sum_x = c_x = sum_y = c_y = sum_xy = c_xy = sum_x2 = c_x2 = 0.0
        for x, v in zip(xs, vs, strict=True):
            sum_x, c_x = kahan_inc(x, sum_x, c_x)
            sum_y, c_y = kahan_inc(v, sum_y, c_y)
            sum_xy, c_xy = kahan_inc(x * v, sum_xy, c_xy)
            sum_x2, c_x2 = kahan_inc(x * x, sum_x2, c_x2)
        sum_x += c_x
        sum_y += c_y
        sum_xy += c_xy
        sum_x2 += c_x2
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = mathops.div(cov_xy, var_x)
    intercept = sum_y / n - slope * sum_x / n
    return slope, intercept


def _deriv(ts: list[float], vs: list[float], w: Window) -> float | None:
    if len(vs) < 2:
        return None
    return linear_regression(ts, vs, round(ts[0] * 1000))[0]


def _predict_linear(ts: list[float], vs: list[float], w: Window) -> float | None:
    if len(vs) < 2:
        return None
    slope, intercept = linear_regression(ts, vs, w.step_time)
    return slope * w.params[0] + intercept


def _resets(ts: list[float], vs: list[float], w: Window) -> float | None:
    resets = 0
    prev = vs[0]
    for cur in vs[1:]:
        if cur < prev:
            resets += 1
        prev = cur
    return float(resets)


def _changes(ts: list[float], vs: list[float], w: Window) -> float | None:
    changes = 0
    prev = vs[0]
    for cur in vs[1:]:
        if cur != prev and not (cur != cur and prev != prev):
            changes += 1
        prev = cur
    return float(changes)


def _avg_over_time(ts: list[float], vs: list[float], w: Window) -> float | None:
    if _all_finite(vs):
        total = _fsum(vs)
        if total is not None:
            return total / len(vs)
    mean = c = count = 0.0
    for v in vs:
        count += 1
        if math.isinf(mean):
            if math.isinf(v) and (mean > 0) == (v > 0):
                continue
            if not math.isinf(v) and v == v:
                continue
        mean, c = kahan_inc(v / count - mean / count, mean, c)
    if math.isinf(mean):
        return mean
    return mean + c


def _sum_over_time(ts: list[float], vs: list[float], w: Window) -> float | None:
    if _all_finite(vs):
        exact = _fsum(vs)
        if exact is not None:
            return exact
    total = c = 0.0
    for v in vs:
        total, c = kahan_inc(v, total, c)
    if math.isinf(total):
        return total
    return total + c


def _max_over_time(ts: list[float], vs: list[float], w: Window) -> float | None:
    best = vs[0]
    for v in vs:
        if v > best or best != best:
            best = v
    return best


def _min_over_time(ts: list[float], vs: list[float], w: Window) -> float | None:
    best = vs[0]
    for v in vs:
        if v < best or best != best:
            best = v
    return best


def _variance(vs: list[float]) -> float:
    if _all_finite(vs):
        total = _fsum(vs)
        if total is not None:
            mean = total / len(vs)
            squares = _fsum([(v - mean) * (v - mean) for v in vs])
            if squares is not None:
                return squares / len(vs)
    count = mean = c_mean = aux = c_aux = 0.0
    for v in vs:
        count += 1
        delta = v - (mean + c_mean)
        mean, c_mean = kahan_inc(delta / count, mean, c_mean)
        aux, c_aux = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def quantile(q: float, values: list[float]) -> float:
    """Prometheus' quantile() over plain values (quantile.go)."""
    if not values or q != q:
        return NAN
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values, key=_nan_first)
    n = float(len(ordered))
    rank = q * (n - 1)
    lower = max(0.0, math.floor(rank))
    upper = min(n - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[int(lower)] * (1 - weight) + ordered[int(upper)] * weight


def _nan_first(v: float) -> tuple[int, float]:
    # Go's vectorByValueHeap.Less puts NaN first.
    return (0, 0.0) if v != v else (1, v)


def _trend(i: int, tf: float, s0: float, s1: float, b: float) -> float:
    if i == 0:
        return b
    return tf * (s1 - s0) + (1 - tf) * b


def _holt_winters(ts: list[float], vs: list[float], w: Window) -> float | None:
    """Prometheus 2.x holt_winters (double exponential smoothing), functions.go."""
    sf, tf = w.params
    if sf <= 0 or sf >= 1:
        raise PromQLError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:f}")
    if tf <= 0 or tf >= 1:
        raise PromQLError(f"invalid trend factor. Expected: 0 < tf < 1, got: {tf:f}")
    if len(vs) < 2:
        return None
    s0 = 0.0
    s1 = vs[0]
    b = vs[1] - vs[0]
    for i in range(1, len(vs)):
        x = sf * vs[i]
        b = _trend(i - 1, tf, s0, s1, b)
        y = (1 - sf) * (s1 + b)
        s0, s1 = s1, x + y
    return s1


RANGE_FUNCTIONS: dict[str, RangeFunction] = {
    "holt_winters": _holt_winters,
    "rate": lambda ts, vs, w: extrapolated_rate(ts, vs, w, True, True),
    "increase": lambda ts, vs, w: extrapolated_rate(ts, vs, w, True, False),
    "delta": lambda ts, vs, w: extrapolated_rate(ts, vs, w, False, False),
    "irate": lambda ts, vs, w: instant_value(ts, vs, True),
    "idelta": lambda ts, vs, w: instant_value(ts, vs, False),
    "deriv": _deriv,
    "predict_linear": _predict_linear,
    "resets": _resets,
    "changes": _changes,
    "avg_over_time": _avg_over_time,
    "sum_over_time": _sum_over_time,
    "max_over_time": _max_over_time,
    "min_over_time": _min_over_time,
    "count_over_time": lambda ts, vs, w: float(len(vs)),
    "last_over_time": lambda ts, vs, w: vs[-1],
    "present_over_time": lambda ts, vs, w: 1.0,
    "stddev_over_time": lambda ts, vs, w: mathops.sqrt(_variance(vs)),
    "stdvar_over_time": lambda ts, vs, w: _variance(vs),
    "quantile_over_time": lambda ts, vs, w: quantile(w.params[0], vs),
    # absent_over_time is evaluated by the engine: its result depends on all series at once.
}

# Element-wise functions of one instant-vector argument; the metric name is dropped.
SIMPLE_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "abs": abs,
    "ceil": mathops.ceil,
    "floor": mathops.floor,
    "exp": mathops.exp,
    "sqrt": mathops.sqrt,
    "ln": mathops.ln,
    "log2": mathops.log2,
    "log10": mathops.log10,
    "sgn": mathops.sgn,
    "sin": mathops.safe(math.sin),
    "cos": mathops.safe(math.cos),
    "tan": mathops.safe(math.tan),
    "asin": mathops.safe(math.asin),
    "acos": mathops.safe(math.acos),
    "atan": mathops.safe(math.atan),
    "sinh": mathops.safe(math.sinh),
    "cosh": mathops.safe(math.cosh),
    "tanh": mathops.safe(math.tanh),
    "asinh": mathops.safe(math.asinh),
    "acosh": mathops.safe(math.acosh),
    "atanh": mathops.safe(math.atanh),
    "deg": lambda v: v * 180 / math.pi,
    "rad": lambda v: v * math.pi / 180,
}

DATE_FUNCTIONS = frozenset(
    {
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "hour",
        "minute",
        "month",
        "year",
    }
)

OTHER_FUNCTIONS = frozenset(
    {
        "absent",
        "absent_over_time",
        "clamp",
        "clamp_max",
        "clamp_min",
        "histogram_quantile",
        "label_join",
        "label_replace",
        "pi",
        "round",
        "scalar",
        "sort",
        "sort_desc",
        "time",
        "timestamp",
        "vector",
    }
)

FUNCTIONS = (
    frozenset(RANGE_FUNCTIONS) | frozenset(SIMPLE_FUNCTIONS) | DATE_FUNCTIONS | OTHER_FUNCTIONS
)

AGGREGATIONS = frozenset(
    {
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "count_values",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
    }
)
