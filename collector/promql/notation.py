"""Prometheus' expanding series notation, as in promtool rule tests and promql test files.

``load 1m`` / ``input_series`` values such as ``0+10x5 _ stale 3 1-1x2``: ``a+bxn`` is ``a``
then ``n`` more values each ``b`` apart, ``_`` is a missing sample, ``stale`` a staleness marker,
``_xn`` n missing samples (https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/).
"""

from __future__ import annotations

import re

import promql_parser as pp

from vpsmon.collector.storage.query import STALE_NAN

_EXPANDING = re.compile(
    r"^(?P<start>[^x+\-][^x]*?|[+\-]?[^x+\-]+?)(?:(?P<sign>[+-])(?P<step>[^x]+))?x(?P<times>\d+)$"
)


class NotationError(ValueError):
    pass


def _number(text: str) -> float:
    lowered = text.lower()
    if lowered in ("inf", "+inf"):
        return float("inf")
    if lowered == "-inf":
        return float("-inf")
    if lowered == "nan":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise NotationError(f"invalid value {text!r}") from None


def expand_values(text: str) -> list[float | None]:
    """Values of one series line; None is a missing sample, STALE_NAN a staleness marker."""
    out: list[float | None] = []
    for item in text.split():
        if item == "_":
            out.append(None)
            continue
        if item == "stale":
            out.append(STALE_NAN)
            continue
        if item.startswith("_x"):
            try:
                count = int(item[2:])
            except ValueError:
                raise NotationError(f"invalid value {item!r}") from None
            out.extend([None] * count)
            continue
        match = _EXPANDING.match(item)
        if match and "x" in item:
            start = _number(match.group("start"))
            step = _number(match.group("step")) if match.group("step") else 0.0
            if match.group("sign") == "-":
                step = -step
            times = int(match.group("times"))
            value = start
            out.append(value)
            for _ in range(times):
                value += step
                out.append(value)
            continue
        out.append(_number(item))
    return out


def parse_series(text: str) -> dict[str, str]:
    """Label set of a series written as a selector: ``up{job="a", instance="b"}``."""
    try:
        expr = pp.parse(text)
    except ValueError as exc:
        raise NotationError(f"invalid series {text!r}: {exc}") from None
    if not isinstance(expr, pp.VectorSelector) or expr.offset or expr.at is not None:
        raise NotationError(f'invalid series {text!r}: expected metric{{label="value"}}')
    labels: dict[str, str] = {}
    if expr.name is not None:
        labels["__name__"] = expr.name
    for m in expr.matchers.matchers:
        if not str(m.op).endswith("Equal") or str(m.op).endswith("NotEqual"):
            raise NotationError(f"invalid series {text!r}: only = matchers describe a series")
        labels[m.name] = m.value
    return labels
