"""PromQL: parse with promql-parser, evaluate with Prometheus' semantics over a SampleSource.

Entry point for other stages (rules, HTTP API): ``Engine(source)`` with
``await engine.instant_query(expr, t)`` and ``await engine.range_query(expr, start, end, step)``.
The supported subset is documented in docs/promql.md.
"""

from __future__ import annotations

from vpsmon.collector.promql.engine import Engine
from vpsmon.collector.promql.errors import PromQLError
from vpsmon.collector.promql.memory import MemorySource
from vpsmon.collector.promql.parse import parse_expr
from vpsmon.collector.promql.values import (
    Matrix,
    Sample,
    Scalar,
    Series,
    String,
    Value,
    Vector,
    format_value,
    result_json,
)

__all__ = [
    "Engine",
    "Matrix",
    "MemorySource",
    "PromQLError",
    "Sample",
    "Scalar",
    "Series",
    "String",
    "Value",
    "Vector",
    "format_value",
    "parse_expr",
    "result_json",
]
