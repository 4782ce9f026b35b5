"""PromQL's instant selector and range functions over every series of a `RangeBlock` at once.

Issue #8 (200 alert rules over 1,000 servers in under 1 s of CPU per cycle): the scalar path
(functions.py, engine.py) runs Python per series; these kernels compute one evaluation step
(an instant query or a rule, engine.py's ``self.n == 1`` branches) for all rows of a block in
numpy, with results *bit-identical* to the scalar code, which matches Prometheus.

API (inputs are the block's ``ts`` and ``vs`` matrices, see `RangeBlock`; outputs are a
float64 value per row and a bool ``present`` per row; a value where not present is undefined):

- ``instant(ts, vs, low, high, want_time=False)``: the instant selector at one step, as
  ``_Evaluator.vector_selector`` with ``n == 1`` (``low``/``high`` in seconds: the step time
  minus the lookback delta, and the step time). Per row the newest sample at or before
  ``high``; present iff it exists, is not older than ``low`` and is not a staleness marker;
  the value is its value, or its timestamp with ``want_time`` (``timestamp(x)``).
- ``range_function(name, ts, vs, window)``: ``RANGE_FUNCTIONS[name]`` over each row's samples
  inside ``[window.start / 1000, window.end / 1000]`` with staleness markers dropped, as
  ``_Evaluator.range_function`` with ``n == 1`` (``matrix_input`` drops the markers); a row
  without such a sample, or whose scalar result is None, is not present. ``window.params``
  holds the scalar arguments as the engine sets them.

Exactness. numpy's elementwise + - * / and sqrt on float64 are IEEE operations, the same as
Python's, so a formula evaluated elementwise in the scalar code's order gives the same bits.
What cannot be reproduced that way is done per row by the scalar function itself (a *row*
fallback, so a few odd rows do not slow down the rest):

- sums the scalar code takes with math.fsum (exactly rounded): `_exact_sums` splits each
  value exactly into a high and a low part whose sums are both exact, so their float sum is
  fsum's result; rows where that is not proven (a sum of 0 from other values than +0.0,
  whose sign fsum picks; values near overflow; values spanning ~2**50 in magnitude) fall
  back;
- rows with non-finite values where the scalar code switches to Kahan summation (sum, avg,
  stddev, stdvar, deriv, predict_linear), NaN in quantile_over_time (Go's NaN-first order);
- window bounds beyond 2**52 ms, where float and Python int arithmetic differ (the whole call:
  a sample in the window is within its bounds, so no other row check is needed).

Rows whose samples are not contiguous in the block (holes, markers, cells outside the window
between samples) are first packed to the left, so every kernel sees a row's samples as one run
of cells ``[first, last]``.

Cost (bench/kernels.py, 2000 rows x 41 cells, one core): about 0.1 ms for the selection
itself, rate/irate/changes/min/max/count/last 0.1-0.3 ms, sum/avg 0.3-0.8 ms, stddev 0.6-1 ms,
deriv/predict_linear 1-2 ms, quantile ~1 ms, holt_winters ~1 ms, the instant selector 0.03
ms. Much of what is above the lower figures is page faults on fresh large temporaries (glibc
returns freed memory of that size to the system), hence the in-place reuse below.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vpsmon.collector.promql.functions import RANGE_FUNCTIONS, Window
from vpsmon.collector.storage.query import STALE_NAN_BITS

Array = Any  # numpy.ndarray; numpy's own typing adds nothing for these float64 matrices

__all__ = ["instant", "range_function"]

_STALE = np.uint64(STALE_NAN_BITS)
# Integers (ms) up to here are exact in float64 and their differences too, so rounding
# ``ts * 1000`` and subtracting window bounds in float64 equals the scalar code's int math.
_MS_LIMIT = 2.0**52
# Rows whose absolute sum stays below this cannot overflow in fsum's partials nor in ours;
# above _SUM_LOW, _exact_sums' grid (2**-53 * sigma) does not underflow.
_SUM_LIMIT = 2.0**1020
_SUM_LOW = 2.0**-960


def _stale(vs: Array) -> Array:
    return vs.view(np.uint64) == _STALE


# --- instant selector ---------------------------------------------------------------------


def instant(
    ts: Array, vs: Array, low: float, high: float, want_time: bool = False
) -> tuple[Array, Array]:
    """The instant selector at one step (engine.py ``vector_selector``, ``n == 1``)."""
    rows, width = ts.shape
    if width == 0:
        return np.full(rows, np.nan), np.zeros(rows, dtype=bool)
    at_or_before = ts <= high  # NaN (no sample) is False
    last_col = at_or_before[:, -1]
    if last_col.all():  # the usual block: every row's newest cell is the answer
        j = np.full(rows, width - 1)
        exists = last_col
    else:
        j = width - 1 - np.argmax(at_or_before[:, ::-1], axis=1)
        exists = at_or_before[np.arange(rows), j]
    r = np.arange(rows)
    t = ts[r, j]
    v = vs[r, j]
    present = exists & (t >= low) & ~_stale(v)
    return (t if want_time else v), present


# --- preparing a block for range functions ------------------------------------------------


class _Rows:
    """A block's samples inside a window, each row's samples contiguous in ``[first, last]``.

    ``T``/``V`` are the block's matrices, or copies where rows had to be packed; ``valid``
    marks the samples (in the window, not markers); ``n`` counts them.
    """

    __slots__ = ("T", "V", "valid", "n", "first", "last", "any", "r")

    def __init__(self, ts: Array, vs: Array, low: float, high: float) -> None:
        rows, width = ts.shape
        valid = (ts >= low) & (ts <= high)
        valid &= ~_stale(vs)
        # A count per row; a float32 matrix-vector product is 4x faster than count_nonzero
        # along short rows, and exact (counts < 2**24).
        n = (valid.astype(np.float32) @ np.ones(width, np.float32)).astype(np.intp)
        first = np.argmax(valid, axis=1)
        if valid[:, -1].all():  # the head's blocks are right-aligned: skip a reversed argmax
            last = np.full(rows, width - 1)
        else:
            last = width - 1 - np.argmax(valid[:, ::-1], axis=1)
        holes = np.flatnonzero((n > 0) & (last - first + 1 != n))
        if holes.size:
            # Pack these rows' samples to the left, time order kept (a stable sort of "not a
            # sample" moves the samples first without reordering them).
            ts, vs = ts.copy(), vs.copy()
            sub = valid[holes]
            order = np.argsort(~sub, axis=1, kind="stable")
            ts[holes] = np.take_along_axis(ts[holes], order, axis=1)
            vs[holes] = np.take_along_axis(vs[holes], order, axis=1)
            valid[holes] = np.take_along_axis(sub, order, axis=1)
            first[holes] = 0
            last[holes] = n[holes] - 1
        self.T = ts
        self.V = vs
        self.valid = valid
        self.n = n
        self.any = n > 0
        self.first = first
        self.last = last
        self.r = np.arange(rows)

    def at(self, matrix: Array, cols: Array) -> Array:
        """``matrix[row, cols[row]]`` per row; ``cols`` must be in range (first, last are)."""
        return matrix[self.r, cols]

    def masked(self, matrix: Array, inplace: bool = False) -> Array:
        """``matrix`` with 0.0 outside the samples (for sums); ``inplace`` for a temporary.

        Kernels reuse their temporaries where they can: a fresh rows x width float64 matrix
        is fresh memory from the allocator, page-faulted in again at each call.
        """
        if inplace:
            np.copyto(matrix, 0.0, where=~self.valid)
            return matrix
        return np.where(self.valid, matrix, 0.0)

    def row_lists(self, i: int) -> tuple[list[float], list[float]]:
        lo, hi = int(self.first[i]), int(self.last[i]) + 1
        return self.T[i, lo:hi].tolist(), self.V[i, lo:hi].tolist()


def _fallback(
    name: str, rows: _Rows, which: Array, window: Window, values: Array, present: Array
) -> None:
    """The scalar function on each row in ``which`` (indices of rows with samples)."""
    fn = RANGE_FUNCTIONS[name]
    for i in which.tolist():
        ts, vs = rows.row_lists(i)
        result = fn(ts, vs, window)
        if result is None:
            present[i] = False
        else:
            values[i] = result
            present[i] = True


# --- exactly rounded sums -----------------------------------------------------------------


def _exact_sums(x: Array, any_zero: bool = False) -> tuple[Array, Array]:
    """Per row, the correctly rounded sum of ``x`` (math.fsum's result) where ``ok``.

    Rump, Ogita and Oishi's ExtractVector ("Accurate floating-point summation part I", 2008,
    lemma 3.3): with sigma a power of two above 2 * sum|x|, q = (sigma + x) - sigma and
    p = x - q are exact, q is a multiple of u * sigma (u = 2**-53) and |p| <= u * sigma. So:

    - sum(q) is exact in any order: every partial sum is a multiple of u * sigma below sigma;
    - every p is a multiple of g, the spacing of the row's smallest non-zero |x| (q is a
      multiple of u * sigma, itself a multiple of every x's spacing), and sum|p| <= n * u *
      sigma; when that is below 2**53 * g (checked as: no non-zero |x| below
      n * sigma * 2**-53) every partial sum of p is exact too;
    - so Q + P is the exact sum of the row, and fl(Q + P) its correctly rounded value (ties to
      even), which is what fsum returns.

    Rows not ``ok`` (the caller falls back to the scalar code): a sum of zero (fsum picks the
    zero's sign) unless every value is +0.0 or ``any_zero`` says the caller does not mind the
    sign (it gets +0.0), values or sums near overflow (fsum raises and the scalar code switches
    to Kahan) or so tiny that u * sigma underflows, NaN or Inf, and rows whose values span
    more than about 2**50 / n in magnitude (e.g. 1e16 and 0.1 together).
    """
    rows, width = x.shape
    if width == 0:
        return np.zeros(rows), np.zeros(rows, dtype=bool)
    # Sums as matrix-vector products (BLAS, several times faster than sum along short rows):
    # the order does not matter where they are exact, and absum only sets sigma.
    ones = np.ones(width)
    with np.errstate(all="ignore"):
        a = np.abs(x)
        absum = a @ ones
        sigma = np.ldexp(1.0, np.frexp(absum)[1] + 1)
        # Every non-zero |x| >= n * sigma * 2**-53 makes its spacing (> |x| * 2**-53) above
        # n * sigma * 2**-106, the condition for the low parts' sum to be exact.
        tiny = np.less(a, (width * 2.0**-53) * sigma[:, None])
        tiny &= a != 0
        ok = (absum < _SUM_LIMIT) & (absum > _SUM_LOW) & ~tiny.any(axis=1)
        q = a  # reuse the buffer: fresh large arrays cost page faults
        np.add(x, sigma[:, None], out=q)
        q -= sigma[:, None]
        r = q @ ones
        p = np.subtract(x, q, out=q)
        r += p @ ones
        if any_zero:
            zero = absum == 0
            r[zero] = 0.0
            ok |= zero
            r[ok & (r == 0)] = 0.0
        else:
            ok &= r != 0
            # All +0.0 (a counter or gauge that stays at zero, common): fsum gives +0.0.
            zero = np.flatnonzero(absum == 0)
            if zero.size:
                r[zero] = 0.0
                ok[zero] = ~np.signbit(x[zero]).any(axis=1)
    return r, ok


# --- the range functions ------------------------------------------------------------------


def range_function(name: str, ts: Array, vs: Array, window: Window) -> tuple[Array, Array]:
    """``RANGE_FUNCTIONS[name]`` over every row (engine.py ``range_function``, ``n == 1``)."""
    if name not in RANGE_FUNCTIONS:
        raise KeyError(name)
    count, width = ts.shape
    if width == 0:  # no cells: no series has a sample
        return np.full(count, np.nan), np.zeros(count, dtype=bool)
    low, high = window.start / 1000, window.end / 1000
    rows = _Rows(ts, vs, low, high)
    values = np.full(count, np.nan)
    present = rows.any.copy()
    kernel = _KERNELS.get(name)
    if kernel is None or max(abs(window.start), abs(window.end), abs(window.step_time)) >= (
        _MS_LIMIT
    ):
        _fallback(name, rows, np.flatnonzero(present), window, values, present)
        return values, present
    with np.errstate(all="ignore"):
        kernel(name, rows, window, values, present)
    return values, present


_Kernel = Any  # Callable[[str, _Rows, Window, Array, Array], None]


def _rate(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    """extrapolated_rate, elementwise in its order of operations."""
    is_counter = name != "delta"
    is_rate = name == "rate"
    if is_rate and w.range == 0:  # the scalar code divides by zero: let it raise
        _fallback(name, rows, np.flatnonzero(present), w, values, present)
        return
    V, T, n = rows.V, rows.T, rows.n
    vf, vl = rows.at(V, rows.first), rows.at(V, rows.last)
    result = vl - vf
    if is_counter:
        pairs = rows.valid[:, 1:] & rows.valid[:, :-1]
        prev = V[:, :-1]
        reset = pairs & (V[:, 1:] < prev)
        columns = np.flatnonzero(reset.any(axis=0))
        if columns.size:
            # Each reset's previous value added in time order, a column at a time; -0.0 is
            # the additive identity (x + -0.0 == x bit for bit for every x, where +0.0 would
            # turn a -0.0 result into +0.0), so the cells without a reset add nothing.
            terms = np.where(reset, prev, -0.0)
            for j in columns.tolist():
                result += terms[:, j]
    first = np.rint(rows.at(T, rows.first) * 1000)
    last = np.rint(rows.at(T, rows.last) * 1000)
    duration_to_start = (first - float(w.start)) / 1000
    duration_to_end = (float(w.end) - last) / 1000
    sampled_interval = (last - first) / 1000
    average_between = sampled_interval / (n - 1).astype(np.float64)
    if is_counter:
        duration_to_zero = sampled_interval * (vf / result)
        closer = (result > 0) & (vf >= 0) & (duration_to_zero < duration_to_start)
        duration_to_start = np.where(closer, duration_to_zero, duration_to_start)
    threshold = average_between * 1.1
    half = average_between / 2
    extrapolate_to = sampled_interval + np.where(
        duration_to_start < threshold, duration_to_start, half
    )
    extrapolate_to = extrapolate_to + np.where(duration_to_end < threshold, duration_to_end, half)
    factor = extrapolate_to / sampled_interval
    if is_rate:
        factor = factor / (w.range / 1000)
    values[:] = result * factor
    present &= n >= 2


def _instant_value(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    """instant_value (irate, idelta) from each row's last two samples."""
    is_rate = name == "irate"
    V, T = rows.V, rows.T
    last = rows.at(V, rows.last)
    before = np.maximum(rows.last - 1, 0)
    previous = rows.at(V, before)
    result = last - previous
    if is_rate:
        result = np.where(last < previous, last, result)
    interval = np.rint(rows.at(T, rows.last) * 1000) - np.rint(rows.at(T, before) * 1000)
    if is_rate:
        result = result / (interval / 1000)
    values[:] = result
    present &= (rows.n >= 2) & (interval != 0)


def _pair_counts(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    """resets and changes: counted over consecutive samples."""
    V = rows.V
    pairs = rows.valid[:, 1:] & rows.valid[:, :-1]
    cur, prev = V[:, 1:], V[:, :-1]
    if name == "resets":
        hit = pairs & (cur < prev)
    else:
        hit = pairs & (cur != prev) & ~(np.isnan(cur) & np.isnan(prev))
    values[:] = np.count_nonzero(hit, axis=1).astype(np.float64)


def _count(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    values[:] = rows.n.astype(np.float64)


def _last(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    values[:] = rows.at(rows.V, rows.last)


def _present(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    values[:] = 1.0


def _extreme(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    """max/min_over_time: NaN loses to any number; among equal values (0.0 and -0.0) the first
    one wins, as in the scalar loop (it replaces the best only by a strictly better value)."""
    V = rows.V
    numbers = rows.valid & ~np.isnan(V)
    if name == "max_over_time":
        best = np.where(numbers, V, -np.inf).max(axis=1)
    else:
        best = np.where(numbers, V, np.inf).min(axis=1)
    has_number = numbers.any(axis=1)
    zero = np.flatnonzero(has_number & (best == 0))
    if zero.size:  # the sign of the first zero
        col = np.argmax(numbers[zero] & (V[zero] == 0), axis=1)
        best[zero] = V[zero, col]
    values[:] = np.where(has_number, best, np.nan)


def _sum(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    total, ok = _exact_sums(rows.masked(rows.V))
    values[:] = total / rows.n if name == "avg_over_time" else total
    _fallback(name, rows, np.flatnonzero(present & ~ok), w, values, present)


def _variance_kernel(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    n = rows.n
    # The sign of a zero sum does not matter: the mean is only subtracted, and d * d is +0.0
    # either way; a zero sum of squares means all are +0.0, and fsum gives +0.0.
    x = rows.masked(rows.V)
    total, ok = _exact_sums(x, any_zero=True)
    mean = total / n
    d = np.subtract(rows.V, mean[:, None], out=x)
    squares, ok2 = _exact_sums(rows.masked(np.multiply(d, d, out=d), True), any_zero=True)
    variance = squares / n
    values[:] = np.sqrt(variance) if name == "stddev_over_time" else variance
    _fallback(name, rows, np.flatnonzero(present & ~(ok & ok2)), w, values, present)


def _regression(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    """deriv and predict_linear: linear_regression with fsum, elementwise."""
    V, T, n = rows.V, rows.T, rows.n
    present &= n >= 2
    init_y = rows.at(V, rows.first)
    constant = ~np.isnan(init_y) & ~(rows.valid & (V != init_y[:, None])).any(axis=1)
    if name == "deriv":
        intercept_ms = np.rint(rows.at(T, rows.first) * 1000)[:, None]
    else:
        intercept_ms = float(w.step_time)
    xs = np.multiply(T, 1000)  # (round(t * 1000) - intercept_time) / 1e3, in place
    np.rint(xs, out=xs)
    xs -= intercept_ms
    xs /= 1e3
    xs = rows.masked(xs, True)
    ys = rows.masked(V)
    sum_x, ok = _exact_sums(xs)
    sum_y, ok_y = _exact_sums(ys)
    product = np.multiply(xs, ys, out=ys)
    sum_xy, ok_xy = _exact_sums(product)
    sum_x2, ok_x2 = _exact_sums(np.multiply(xs, xs, out=product))
    nf = n.astype(np.float64)
    cov_xy = sum_xy - sum_x * sum_y / nf
    var_x = sum_x2 - sum_x * sum_x / nf
    slope = cov_xy / var_x
    intercept = sum_y / nf - slope * sum_x / nf
    slope = np.where(constant, np.where(np.isinf(init_y), np.nan, 0.0), slope)
    intercept = np.where(constant, np.where(np.isinf(init_y), np.nan, init_y), intercept)
    if name == "deriv":
        values[:] = slope
    else:
        values[:] = slope * w.params[0] + intercept
    exact = ok & ok_y & ok_xy & ok_x2
    _fallback(
        name,
        rows,
        np.flatnonzero(present & ~constant & ~exact),
        w,
        values,
        present,
    )


def _quantile(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    """quantile_over_time with numpy's sort. Python's sort is stable, so equal values keep
    their time order; only 0.0 and -0.0 are equal with different bits, and rows holding both
    fall back, as do rows with NaN (sorted first by Go's rule)."""
    q = w.params[0]
    if q != q or q < 0 or q > 1:
        values[:] = math.nan if q != q else (-math.inf if q < 0 else math.inf)
        return
    V, n = rows.V, rows.n
    odd = (rows.valid & np.isnan(V)).any(axis=1)
    zero = rows.valid & (V == 0)
    with_zero = np.flatnonzero(zero.any(axis=1))
    if with_zero.size:
        negative = np.signbit(V[with_zero])
        both = (zero[with_zero] & negative).any(axis=1) & (zero[with_zero] & ~negative).any(axis=1)
        odd[with_zero] |= both
    ordered = np.sort(np.where(rows.valid, V, np.inf), axis=1)
    nf = n.astype(np.float64)
    rank = q * (nf - 1)
    floor = np.floor(rank)
    lower = np.maximum(0.0, floor)
    upper = np.minimum(nf - 1, lower + 1)
    weight = rank - floor
    lo = np.clip(lower, 0, None).astype(np.intp)
    hi = np.clip(upper, 0, None).astype(np.intp)
    values[:] = rows.at(ordered, lo) * (1 - weight) + rows.at(ordered, hi) * weight
    _fallback(name, rows, np.flatnonzero(present & odd), w, values, present)


def _holt_winters(name: str, rows: _Rows, w: Window, values: Array, present: Array) -> None:
    """holt_winters' smoothing loop, a sample index at a time over all rows."""
    first_row = np.flatnonzero(present)[:1].tolist()
    if not first_row:
        return
    # The scalar function on one row checks the factors and raises as the scalar path does.
    fn = RANGE_FUNCTIONS[name]
    fn(*rows.row_lists(first_row[0]), w)
    sf, tf = w.params
    V, n = rows.V, rows.n
    present &= n >= 2
    width = V.shape[1]
    col = np.minimum(rows.first, width - 1)
    s0 = np.zeros(len(n))
    s1 = rows.at(V, col)
    b = rows.at(V, np.minimum(col + 1, width - 1)) - s1
    one_sf, one_tf = 1 - sf, 1 - tf
    result = s1.copy()
    for i in range(1, int(n.max(initial=0))):
        x = sf * rows.at(V, np.minimum(col + i, width - 1))
        if i > 1:  # _trend(i - 1, ...): the first step keeps b
            b = tf * (s1 - s0) + one_tf * b
        y = one_sf * (s1 + b)
        s0, s1 = s1, x + y
        result = np.where(n - 1 == i, s1, result)  # a row's answer is s1 after its last sample
    values[:] = result


_KERNELS: dict[str, _Kernel] = {
    "rate": _rate,
    "increase": _rate,
    "delta": _rate,
    "irate": _instant_value,
    "idelta": _instant_value,
    "resets": _pair_counts,
    "changes": _pair_counts,
    "count_over_time": _count,
    "last_over_time": _last,
    "present_over_time": _present,
    "max_over_time": _extreme,
    "min_over_time": _extreme,
    "sum_over_time": _sum,
    "avg_over_time": _sum,
    "stddev_over_time": _variance_kernel,
    "stdvar_over_time": _variance_kernel,
    "deriv": _regression,
    "predict_linear": _regression,
    "quantile_over_time": _quantile,
    "holt_winters": _holt_winters,
}
