"""Float operations with Go's IEEE-754 results where Python raises instead.

Python raises on 1/0, 0**-1, math.log(0), math.fmod(x, 0) and overflow; Prometheus (Go) returns
±Inf or NaN. Every arithmetic the engine does on sample values goes through these.
"""

from __future__ import annotations

import math
from collections.abc import Callable

INF = math.inf
NAN = math.nan


def div(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or a != a:
            return NAN
        return math.copysign(INF, a) * math.copysign(1.0, b)
    return a / b


def mod(a: float, b: float) -> float:
    if b == 0 or math.isinf(a) or a != a or b != b:
        return NAN
    if math.isinf(b):
        return a
    return math.fmod(a, b)


def _is_odd_integer(y: float) -> bool:
    return math.isfinite(y) and y == math.floor(y) and abs(y) < 2**53 and int(y) % 2 == 1


def power(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except ZeroDivisionError:
        pass
    except ValueError:
        if a == 0 and b < 0:
            return math.copysign(INF, a) if _is_odd_integer(b) else INF
        return NAN
    except OverflowError:
        pass
    if a == 0 and b < 0:
        return math.copysign(INF, a) if _is_odd_integer(b) else INF
    if a < 0 and _is_odd_integer(b):
        return -INF if abs(a) > 1 else -0.0
    return INF if abs(a) > 1 or b < 0 else 0.0


def safe(fn: Callable[[float], float]) -> Callable[[float], float]:
    """Wrap a math function: domain errors give NaN, overflow gives +Inf, like Go."""

    def wrapped(v: float) -> float:
        try:
            return float(fn(v))
        except ValueError:
            return NAN
        except OverflowError:
            return INF

    return wrapped


def _logarithm(log: Callable[[float], float]) -> Callable[[float], float]:
    """A logarithm with Go's edge cases: log(0) = -Inf, negative or NaN is NaN, log(+Inf) = +Inf."""

    def apply(v: float) -> float:
        if v == 0:
            return -INF
        if v < 0 or v != v:
            return NAN
        if math.isinf(v):
            return INF
        return log(v)

    return apply


ln = _logarithm(math.log)
log2 = _logarithm(math.log2)
log10 = _logarithm(math.log10)


def sqrt(v: float) -> float:
    if v < 0:
        return NAN
    return math.sqrt(v) if math.isfinite(v) else v


def exp(v: float) -> float:
    if v != v:
        return NAN
    try:
        return math.exp(v)
    except OverflowError:
        return INF


def ceil(v: float) -> float:
    return float(math.ceil(v)) if math.isfinite(v) else v


def floor(v: float) -> float:
    return float(math.floor(v)) if math.isfinite(v) else v


def sgn(v: float) -> float:
    if v < 0:
        return -1.0
    if v > 0:
        return 1.0
    return v


def round_to(v: float, to_nearest: float) -> float:
    inverse = div(1.0, to_nearest)
    scaled = v * inverse + 0.5
    return div(floor(scaled), inverse)


def atan2(a: float, b: float) -> float:
    return math.atan2(a, b)
