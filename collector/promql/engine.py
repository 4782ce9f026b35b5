"""The PromQL evaluator: Prometheus v2.42 semantics over any `SampleSource`.

Like Prometheus' engine, every expression is evaluated for all steps of the query at once
(an instant query is a range query of one step). An instant-vector value is a list of
``(labels, values)`` with one value slot per step (``None`` where the series has no sample at
that step); a scalar is a list of floats, one per step. Evaluation times are integer
milliseconds; sample timestamps stay the source's float seconds (each the nearest double to a
whole millisecond), compared with bounds computed in milliseconds and divided once, so a sample
exactly on a window edge is seen exactly as Prometheus sees it.

Semantics followed (https://prometheus.io/docs/prometheus/latest/querying/basics/ and
promql/engine.go, functions.go at v2.42.0):

- An instant selector takes, per step, the newest sample at or before the step time that is
  at most ``lookback_delta`` old; a staleness marker there means "no value".
- A range selector takes the samples in the closed interval [t - range, t], markers dropped.
- ``offset`` shifts the time back; ``@`` fixes it (``start()``/``end()`` are the query's).
- Arithmetic drops the metric name, comparisons keep it unless ``bool`` is given.
- Two series with the same labels in one step's result is an error.
"""

from __future__ import annotations

import asyncio
import calendar
import math
import operator
import re
import time
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from vpsmon.collector.promql import labels as lbl
from vpsmon.collector.promql import mathops
from vpsmon.collector.promql.columnar import Column, ColumnarEvaluator, Plans
from vpsmon.collector.promql.errors import PromQLError
from vpsmon.collector.promql.functions import (
    DATE_FUNCTIONS,
    RANGE_FUNCTIONS,
    SIMPLE_FUNCTIONS,
    Window,
    quantile,
)
from vpsmon.collector.promql.labels import METRIC_NAME, Labels
from vpsmon.collector.promql.nodes import (
    Aggregate,
    At,
    Binary,
    Call,
    MatrixSel,
    Node,
    NumberLit,
    StringLit,
    Subquery,
    Unary,
    VectorSel,
)
from vpsmon.collector.promql.parse import parse_expr
from vpsmon.collector.promql.regex import RegexError, compile_anchored
from vpsmon.collector.promql.values import (
    Matrix,
    Sample,
    Scalar,
    Series,
    String,
    Value,
    Vector,
    format_value,
)
from vpsmon.collector.storage.query import SampleSource, is_stale_marker

Vals = list[float | None]
VectorVal = list[tuple[Labels, Vals]]
ScalarVal = list[float]
RawSeries = tuple[Labels, list[float], list[float]]  # timestamps in seconds

ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^"})
COMPARISON = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPS = frozenset({"and", "or", "unless"})
MAX_INT64 = 2**63 - 1

DUPLICATE_LABELSET = "vector cannot contain metrics with the same labelset"


def to_millis(seconds: float) -> int:
    return round(seconds * 1000)


class Engine:
    """Evaluates PromQL over a `SampleSource`.

    ``lookback_delta`` (seconds) is how far back an instant selector looks for a sample;
    ``default_subquery_step`` (seconds) is the resolution of a subquery without a step (the
    global evaluation interval in Prometheus); ``timeout`` (seconds) bounds one query;
    ``max_samples`` bounds the samples one query may load.

    ``selector_cache_ttl`` (seconds, off by default) lets queries share what a selector fetched
    for the same time range during that long: a rule manager evaluating many rules at the same
    time sets it to about a second, so rules that read the same series fetch them once; with
    ``share_subexpressions`` (the default) they also share the values of subexpressions
    evaluated at the same time (a warning and a critical rule over the same ratio compute it
    once).
    """

    def __init__(
        self,
        source: SampleSource,
        lookback_delta: float = 300,
        *,
        default_subquery_step: float = 60,
        timeout: float = 120,
        max_samples: int = 20_000_000,
        selector_cache_ttl: float = 0.0,
        share_subexpressions: bool = True,
        columnar: bool = True,
    ) -> None:
        if lookback_delta <= 0:
            raise ValueError("lookback_delta must be positive")
        self.source = source
        self.lookback = to_millis(lookback_delta)
        self.default_subquery_step = max(1, to_millis(default_subquery_step))
        self.timeout = timeout
        self.max_samples = max_samples
        self.cache = _SelectorCache(selector_cache_ttl) if selector_cache_ttl > 0 else None
        if self.cache is not None:
            self.cache.subexpressions = share_subexpressions
        # Instant queries (rules) evaluate over whole columns (columnar.py); off, every node
        # goes step by step (the reference the columnar path is tested against).
        self.columnar = columnar
        self.plans = Plans()

    @staticmethod
    def check(expr: str) -> Node:
        """Parse ``expr`` without evaluating it; raises PromQLError (kind "parse")."""
        return parse_expr(expr)

    async def instant_query(self, expr: str, t: float) -> Value:
        node = parse_expr(expr)
        at = to_millis(t)
        ev = _Evaluator(self._context(at, at), at, at, 1)
        if isinstance(node, MatrixSel | Subquery):
            series, ends, range_ms = await ev.matrix_input(node)
            end = ends[0]
            out = []
            for labels, ts, vs in series:
                lo = bisect_left(ts, (end - range_ms) / 1000)
                hi = bisect_right(ts, end / 1000)
                if lo < hi:
                    out.append(Series(lbl.to_dict(labels), ts[lo:hi], vs[lo:hi]))
            return Matrix(out)
        if self.columnar and node.type in ("vector", "scalar"):
            result = await ColumnarEvaluator(ev, self.plans).eval(node)
            if isinstance(result, Column):  # straight to samples: a storm has 10^5 of them
                rows = np.flatnonzero(result.present)
                keys = result.keys
                return Vector(
                    [
                        Sample(dict(keys[i]), v, at / 1000, keys[i])
                        for i, v in zip(rows.tolist(), result.values[rows].tolist(), strict=True)
                    ]
                )
            value: Any = [result]
        else:
            value = await ev.eval(node)
        seconds = at / 1000
        if node.type == "string":
            return String(str(value), seconds)
        if node.type == "scalar":
            return Scalar(value[0], seconds)
        return Vector(
            [
                Sample(lbl.to_dict(labels), vals[0], seconds, labels)
                for labels, vals in value
                if vals[0] is not None
            ]
        )

    async def range_query(self, expr: str, start: float, end: float, step: float) -> Matrix:
        node = parse_expr(expr)
        if node.type not in ("vector", "scalar"):
            kind = "range vector" if node.type == "matrix" else node.type
            raise PromQLError(
                f'invalid expression type "{kind}" for range query, '
                "must be Scalar or instant Vector",
                "parse",
            )
        start_ms, end_ms, step_ms = to_millis(start), to_millis(end), to_millis(step)
        if step_ms <= 0:
            raise PromQLError(
                "zero or negative query resolution step widths are not accepted", "parse"
            )
        if end_ms < start_ms:
            raise PromQLError("end timestamp must not be before start time", "parse")
        ev = _Evaluator(self._context(start_ms, end_ms), start_ms, end_ms, step_ms)
        value = await ev.eval(node)
        if node.type == "scalar":
            value = [((), list(value))]
        out = []
        for labels, vals in sorted(value, key=lambda item: item[0]):
            ts = [ev.steps[i] / 1000 for i, v in enumerate(vals) if v is not None]
            if ts:
                out.append(Series(lbl.to_dict(labels), ts, [v for v in vals if v is not None]))
        return Matrix(out)

    def _context(self, start: int, end: int) -> _Context:
        return _Context(
            source=self.source,
            lookback=self.lookback,
            query_start=start,
            query_end=end,
            default_step=self.default_subquery_step,
            max_samples=self.max_samples,
            deadline=time.monotonic() + self.timeout,
            cache=self.cache,
        )


@dataclass(slots=True)
class _Context:
    """What every evaluator of one query (including subqueries) shares."""

    source: SampleSource
    lookback: int
    query_start: int
    query_end: int
    default_step: int
    max_samples: int
    deadline: float
    cache: _SelectorCache | None = None
    samples: int = 0
    ticks: int = 0
    last_yield: float = field(default_factory=time.monotonic)

    def due(self) -> bool:
        """Count one unit of work; True every 32nd, when `checkpoint` should run. Loops over
        series call this (a plain call) instead of awaiting `checkpoint` for every series."""
        self.ticks += 1
        return not self.ticks & 31

    async def checkpoint(self) -> None:
        """Enforce the timeout and let other tasks run during a long evaluation."""
        self.ticks += 1
        if self.ticks & 31:
            return
        await self.check_now()

    async def check_now(self) -> None:
        now = time.monotonic()
        if now > self.deadline:
            raise PromQLError("query timed out in expression evaluation", "timeout")
        if now - self.last_yield > 0.02:
            await asyncio.sleep(0)
            self.last_yield = time.monotonic()

    async def shared(self, key: tuple[Any, ...], compute: Callable[[], Awaitable[Any]]) -> Any:
        """``compute()``'s value, kept in the evaluation cache under ``key`` for the other
        queries of this evaluation; a value found there counts its samples against the limit
        again, as when it was computed."""
        cache = self.cache
        assert cache is not None
        found = cache.lookup(key)
        if found is not None:
            value, samples = found
            self.count(samples)
            return value
        before = self.samples
        value = await compute()
        cache.store(key, (value, self.samples - before))
        return value

    def count(self, samples: int) -> None:
        self.samples += samples
        if self.samples > self.max_samples:
            raise PromQLError(
                "query processing would load too many samples into memory in query execution"
            )


class _SelectorCache:
    """What a selector fetched, and what a subexpression evaluated to, by what determines it
    (matchers and time range; expression, steps and the query's start and end), kept ``ttl``
    seconds; bounded.

    Rules of a group are evaluated at one timestamp, and many read the same series or share a
    subexpression (a warning and a critical threshold over the same ratio): each is computed
    once per evaluation. Every part of a query's result is freshly built and never changed in
    place by the evaluator, so a cached value can be handed to several queries. Expired entries
    are dropped at most ``ttl`` seconds after they expire, so a cycle's values do not linger.
    """

    MAX_ENTRIES = 8192

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.subexpressions = True  # also share subexpression values, not only selections
        self.entries: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self.purge_at = 0.0

    def get(self, matchers: Any, mint: int, maxt: int) -> list[RawSeries] | None:
        return self.lookup((matchers, mint, maxt))

    def put(self, matchers: Any, mint: int, maxt: int, data: list[RawSeries]) -> None:
        self.store((matchers, mint, maxt), data)

    def lookup(self, key: tuple[Any, ...]) -> Any:
        found = self.entries.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def store(self, key: tuple[Any, ...], value: Any) -> None:
        now = time.monotonic()
        if now >= self.purge_at or len(self.entries) >= self.MAX_ENTRIES:
            self.entries = {k: v for k, v in self.entries.items() if v[0] >= now}
            if len(self.entries) >= self.MAX_ENTRIES:
                self.entries.clear()
            self.purge_at = now + self.ttl
        self.entries[key] = (now + self.ttl, value)


class _StepOutput:
    """Collects per-step results into series, refusing two same-labelled series in a step."""

    __slots__ = ("n", "series")

    def __init__(self, n: int) -> None:
        self.n = n
        self.series: dict[Labels, Vals] = {}

    def add(self, labels: Labels, i: int, value: float) -> None:
        vals = self.series.get(labels)
        if vals is None:
            vals = self.series[labels] = [None] * self.n
        elif vals[i] is not None:
            raise PromQLError(DUPLICATE_LABELSET)
        vals[i] = value

    def result(self) -> VectorVal:
        return list(self.series.items())


def _merge(items: Iterable[tuple[Labels, Vals]]) -> VectorVal:
    """Series whose labels became equal are merged; overlapping in a step is an error."""
    out: dict[Labels, Vals] = {}
    owned: set[Labels] = set()
    for labels, vals in items:
        existing = out.get(labels)
        if existing is None:
            out[labels] = vals
            continue
        if labels not in owned:
            existing = out[labels] = list(existing)
            owned.add(labels)
        for i, v in enumerate(vals):
            if v is None:
                continue
            if existing[i] is not None:
                raise PromQLError(DUPLICATE_LABELSET)
            existing[i] = v
    return list(out.items())


# Nodes whose values the selector cache shares between the queries of one evaluation.
_SHARED_NODES = (VectorSel, Call, Aggregate, Binary, Unary)


class _Evaluator:
    def __init__(self, ctx: _Context, start: int, end: int, interval: int) -> None:
        self.ctx = ctx
        self.start = start
        self.end = end
        self.interval = interval
        self.steps = list(range(start, end + 1, interval))
        self.n = len(self.steps)
        # Values of child nodes already evaluated by the columnar evaluator (by node id), which
        # hands a node it does not implement to this one (columnar.py `fallback`).
        self.injected: dict[int, Any] | None = None

    # --- dispatch -------------------------------------------------------------------------

    async def eval(self, node: Node) -> Any:
        if self.injected is not None:
            found = self.injected.get(id(node))
            if found is not None:
                return found
        await self.ctx.checkpoint()
        cache = self.ctx.cache
        if cache is None or not cache.subexpressions or not isinstance(node, _SHARED_NODES):
            return await self._eval(node)
        # The value depends on the expression (its repr tells -0.0 from 0.0, which its
        # hash does not), the steps, and the query's start and end (for @ start()/end()).
        ctx = self.ctx
        key = ("expr", repr(node), self.start, self.end, self.interval, ctx.query_start,
               ctx.query_end)  # fmt: skip
        return await ctx.shared(key, lambda: self._eval(node))

    async def _eval(self, node: Node) -> Any:
        if isinstance(node, NumberLit):
            return [node.value] * self.n
        if isinstance(node, StringLit):
            return node.value
        if isinstance(node, VectorSel):
            return await self.vector_selector(node)
        if isinstance(node, Call):
            return await self.call(node)
        if isinstance(node, Aggregate):
            return await self.aggregate(node)
        if isinstance(node, Binary):
            return await self.binary(node)
        if isinstance(node, Unary):
            return await self.unary(node)
        if isinstance(node, MatrixSel | Subquery):
            raise PromQLError("a range vector cannot be used here; apply a function such as rate()")
        raise PromQLError(f"unsupported expression {type(node).__name__}")

    # --- selectors ------------------------------------------------------------------------

    def _resolve_at(self, at: At) -> int:
        if at.kind == "start":
            return self.ctx.query_start
        if at.kind == "end":
            return self.ctx.query_end
        return at.millis

    def _reference_times(self, at: At | None, offset: int) -> list[int]:
        if at is not None:
            return [self._resolve_at(at) - offset] * self.n
        return [t - offset for t in self.steps]

    async def fetch(self, sel: VectorSel, mint: int, maxt: int) -> list[RawSeries]:
        cache = self.ctx.cache
        if cache is not None:
            cached = cache.get(sel.matchers, mint, maxt)
            if cached is not None:
                return cached
        found = await self.ctx.source.select(sel.matchers, mint / 1000, maxt / 1000)
        out: list[RawSeries] = []
        total = 0
        for s in found:
            total += len(s.timestamps)
            key = s.key if s.key is not None else lbl.from_mapping(s.labels)
            out.append((key, s.timestamps, s.values))
        self.ctx.count(total)
        if cache is not None:
            cache.put(sel.matchers, mint, maxt, out)
        return out

    async def vector_selector(self, sel: VectorSel, want_time: bool = False) -> VectorVal:
        refs = self._reference_times(sel.at, sel.offset)
        lookback = self.ctx.lookback
        data = await self.fetch(sel, min(refs) - lookback, max(refs))
        out: VectorVal = []
        if self.n == 1:  # the fetch is the lookback window: its newest sample is the answer
            high, low = refs[0] / 1000, (refs[0] - lookback) / 1000
            ctx = self.ctx
            for labels, ts, vs in data:
                if ctx.due():
                    await ctx.check_now()
                j = len(ts) - 1 if ts and ts[-1] <= high else bisect_right(ts, high) - 1
                if j < 0 or ts[j] < low:
                    continue
                v = vs[j]
                if v != v and is_stale_marker(v):
                    continue
                out.append((labels, [ts[j] if want_time else v]))
            return out
        for labels, ts, vs in data:
            await self.ctx.checkpoint()
            vals: Vals = [None] * self.n
            found = False
            for i, ref in enumerate(refs):
                j = bisect_right(ts, ref / 1000) - 1
                if j < 0 or ts[j] < (ref - lookback) / 1000:
                    continue
                v = vs[j]
                if v != v and is_stale_marker(v):
                    continue
                vals[i] = ts[j] if want_time else v
                found = True
            if found:
                out.append((labels, vals))
        self.ctx.count(len(out) * self.n)  # the points this node holds, as Prometheus counts
        return out

    async def matrix_input(self, node: Node) -> tuple[list[RawSeries], list[int], int]:
        """The series of a range-vector argument, the end of its window per step, its range."""
        if isinstance(node, MatrixSel):
            sel = node.selector
            ends = self._reference_times(sel.at, sel.offset)
            data = await self.fetch(sel, min(ends) - node.range, max(ends))
            cleaned: list[RawSeries] = []
            for labels, ts, vs in data:
                if any(map(math.isnan, vs)) and any(map(is_stale_marker, vs)):
                    keep = [k for k, v in enumerate(vs) if not (v != v and is_stale_marker(v))]
                    ts, vs = [ts[k] for k in keep], [vs[k] for k in keep]
                if ts:
                    cleaned.append((labels, ts, vs))
            return cleaned, ends, node.range
        if isinstance(node, Subquery):
            return await self.subquery(node)
        raise PromQLError(f"expected a range vector, got {node.type}")

    async def subquery(self, node: Subquery) -> tuple[list[RawSeries], list[int], int]:
        ends = self._reference_times(node.at, node.offset)
        step = node.step or self.ctx.default_step
        lowest = min(ends) - node.range
        inner_start = step * (lowest // step)
        if inner_start < lowest:
            inner_start += step
        inner_end = max(ends)
        if inner_end < inner_start:
            return [], ends, node.range
        inner = _Evaluator(self.ctx, inner_start, inner_end, step)
        value = await inner.eval(node.expr)
        if node.expr.type == "scalar":
            value = [((), list(value))]
        out: list[RawSeries] = []
        total = 0
        for labels, vals in value:
            ts = [inner.steps[i] / 1000 for i, v in enumerate(vals) if v is not None]
            vs = [v for v in vals if v is not None]
            total += len(ts)
            if ts:
                out.append((labels, ts, vs))
        self.ctx.count(total)
        return out, ends, node.range

    # --- functions ------------------------------------------------------------------------

    async def call(self, node: Call) -> Any:
        name = node.func
        args = node.args
        if name in RANGE_FUNCTIONS or name == "absent_over_time":
            return await self.range_function(node)
        if name in SIMPLE_FUNCTIONS:
            return _map_values(await self.eval(args[0]), SIMPLE_FUNCTIONS[name])
        if name in DATE_FUNCTIONS:
            return await self.date_function(node)
        if name == "time":
            return [t / 1000 for t in self.steps]
        if name == "pi":
            return [math.pi] * self.n
        if name == "vector":
            scalar = await self.eval(args[0])
            return [((), list(scalar))]
        if name == "scalar":
            vec = await self.eval(args[0])
            out = []
            for i in range(self.n):
                present = [vals[i] for _, vals in vec if vals[i] is not None]
                out.append(present[0] if len(present) == 1 else math.nan)
            return out
        if name == "timestamp":
            arg = args[0]
            if isinstance(arg, VectorSel):
                vec = await self.vector_selector(arg, want_time=True)
            else:
                vec = await self.eval(arg)
                vec = [
                    (
                        labels,
                        [None if v is None else self.steps[i] / 1000 for i, v in enumerate(vals)],
                    )
                    for labels, vals in vec
                ]
            return _merge((lbl.drop_name(labels), vals) for labels, vals in vec)
        if name == "round":
            vec = await self.eval(args[0])
            nearest = await self.eval(args[1]) if len(args) > 1 else [1.0] * self.n
            return _map_values_at(vec, lambda v, i: mathops.round_to(v, nearest[i]))
        if name in ("clamp", "clamp_min", "clamp_max"):
            return await self.clamp(node)
        if name == "absent":
            vec = await self.eval(args[0])
            labels = _absent_labels(args[0])
            vals: Vals = [None] * self.n
            for i in range(self.n):
                if not any(v[i] is not None for _, v in vec):
                    vals[i] = 1.0
            return [(labels, vals)] if any(v is not None for v in vals) else []
        if name in ("sort", "sort_desc"):
            vec = await self.eval(args[0])
            if self.n == 1:
                sign = 1.0 if name == "sort" else -1.0
                vec = sorted(
                    vec,
                    key=lambda item: (
                        (1, 0.0) if item[1][0] != item[1][0] else (0, sign * item[1][0])
                    ),
                )
            return vec
        if name == "label_replace":
            return await self.label_replace(node)
        if name == "label_join":
            return await self.label_join(node)
        if name == "histogram_quantile":
            return await self.histogram_quantile(node)
        raise PromQLError(f"function {name!r} is not supported", "parse")

    async def range_function(self, node: Call) -> VectorVal:
        name = node.func
        index = next(i for i, a in enumerate(node.args) if a.type == "matrix")
        params = [await self.eval(a) for i, a in enumerate(node.args) if i != index]
        series, ends, range_ms = await self.matrix_input(node.args[index])
        if name == "absent_over_time":
            return self._absent_over_time(node.args[index], series, ends, range_ms)
        fn = RANGE_FUNCTIONS[name]
        keep_name = name == "last_over_time"
        window = Window(0, 0, 0, range_ms)
        out: VectorVal = []
        seen: set[Labels] = set()
        if self.n == 1:  # instant queries and rules: one window, usually the whole fetch
            window.step_time, window.end = self.steps[0], ends[0]
            window.start = ends[0] - range_ms
            if params:
                window.params = tuple(p[0] for p in params)
            low, high = window.start / 1000, window.end / 1000
            ctx = self.ctx
            for labels, ts, vs in series:
                if ctx.due():
                    await ctx.check_now()
                if ts[0] < low or ts[-1] > high:
                    lo, hi = bisect_left(ts, low), bisect_right(ts, high)
                    if lo >= hi:
                        continue
                    ts, vs = ts[lo:hi], vs[lo:hi]
                result = fn(ts, vs, window)
                if result is None:
                    continue
                out_labels = labels if keep_name else lbl.drop_name(labels)
                if out_labels in seen:
                    raise PromQLError(DUPLICATE_LABELSET)
                seen.add(out_labels)
                out.append((out_labels, [result]))
            return out
        for labels, ts, vs in series:
            await self.ctx.checkpoint()
            vals: Vals = [None] * self.n
            found = False
            for i, end in enumerate(ends):
                lo = bisect_left(ts, (end - range_ms) / 1000)
                hi = bisect_right(ts, end / 1000, lo)
                if lo >= hi:
                    continue
                window.step_time = self.steps[i]
                window.start = end - range_ms
                window.end = end
                if params:
                    window.params = tuple(p[i] for p in params)
                result = fn(ts[lo:hi], vs[lo:hi], window)
                if result is not None:
                    vals[i] = result
                    found = True
            if found:
                out_labels = labels if keep_name else lbl.drop_name(labels)
                if out_labels in seen:
                    raise PromQLError(DUPLICATE_LABELSET)
                seen.add(out_labels)
                out.append((out_labels, vals))
        self.ctx.count(len(out) * self.n)
        return out

    def _absent_over_time(
        self, arg: Node, series: list[RawSeries], ends: list[int], range_ms: int
    ) -> VectorVal:
        vals: Vals = [None] * self.n
        for i, end in enumerate(ends):
            present = False
            for _, ts, _vs in series:
                lo = bisect_left(ts, (end - range_ms) / 1000)
                if lo < len(ts) and ts[lo] <= end / 1000:
                    present = True
                    break
            if not present:
                vals[i] = 1.0
        if all(v is None for v in vals):
            return []
        labels = _absent_labels(arg.selector) if isinstance(arg, MatrixSel) else ()
        return [(labels, vals)]

    async def date_function(self, node: Call) -> VectorVal:
        fn = _DATE_PARTS[node.func]
        if not node.args:
            return [((), [fn(t // 1000) for t in self.steps])]

        def part(v: float) -> float:
            if not math.isfinite(v):
                return math.nan
            try:
                return fn(int(v))
            except (OverflowError, ValueError, OSError):
                return math.nan

        return _map_values(await self.eval(node.args[0]), part)

    async def clamp(self, node: Call) -> VectorVal:
        vec = await self.eval(node.args[0])
        if node.func == "clamp":
            lows, highs = await self.eval(node.args[1]), await self.eval(node.args[2])
            out = []
            for labels, vals in vec:
                new: Vals = [None] * self.n
                for i, v in enumerate(vals):
                    if v is None or highs[i] < lows[i]:
                        continue
                    new[i] = _go_max(lows[i], _go_min(highs[i], v))
                if any(v is not None for v in new):
                    out.append((lbl.drop_name(labels), new))
            return _merge(out)
        bound = await self.eval(node.args[1])
        if node.func == "clamp_min":
            return _map_values_at(vec, lambda v, i: _go_max(bound[i], v))
        return _map_values_at(vec, lambda v, i: _go_min(bound[i], v))

    async def label_replace(self, node: Call) -> VectorVal:
        vec = await self.eval(node.args[0])
        dst, repl, src, regex = [await self.eval(a) for a in node.args[1:5]]
        try:
            pattern = compile_anchored(regex)
        except RegexError:
            raise PromQLError(f"invalid regular expression in label_replace(): {regex}") from None
        if not lbl.valid_label_name(dst):
            raise PromQLError(f"invalid destination label name in label_replace(): {dst}")
        out = []
        for labels, vals in vec:
            match = pattern.search(lbl.get(labels, src))
            if match is not None:
                labels = lbl.with_label(labels, dst, _expand(repl, match))
            out.append((labels, vals))
        return _merge(out)

    async def label_join(self, node: Call) -> VectorVal:
        vec = await self.eval(node.args[0])
        dst, sep = await self.eval(node.args[1]), await self.eval(node.args[2])
        sources = [await self.eval(a) for a in node.args[3:]]
        for name in sources:
            if not lbl.valid_label_name(name):
                raise PromQLError(f"invalid source label name in label_join(): {name}")
        if not lbl.valid_label_name(dst):
            raise PromQLError(f"invalid destination label name in label_join(): {dst}")
        out = []
        for labels, vals in vec:
            joined = sep.join(lbl.get(labels, name) for name in sources)
            out.append((lbl.with_label(labels, dst, joined), vals))
        return _merge(out)

    async def histogram_quantile(self, node: Call) -> VectorVal:
        qs = await self.eval(node.args[0])
        vec = await self.eval(node.args[1])
        # Buckets group by every label but le (the metric name too); the result drops the name.
        le = frozenset({"le"})
        keyed: list[tuple[Labels, float, Vals]] = []
        for labels, vals in vec:
            try:
                upper = float(lbl.get(labels, "le"))
            except ValueError:
                continue
            keyed.append((lbl.without(labels, le), upper, vals))
        out = _StepOutput(self.n)
        for i in range(self.n):
            await self.ctx.checkpoint()
            groups: dict[Labels, list[tuple[float, float]]] = {}
            for key, upper, vals in keyed:
                v = vals[i]
                if v is not None:
                    groups.setdefault(key, []).append((upper, v))
            for key, buckets in groups.items():
                out.add(lbl.drop_name(key), i, bucket_quantile(qs[i], buckets))
        return out.result()

    # --- operators ------------------------------------------------------------------------

    async def unary(self, node: Unary) -> Any:
        value = await self.eval(node.expr)
        if node.type == "scalar":
            return [-v for v in value]
        return _merge(
            (lbl.drop_name(labels), [None if v is None else -v for v in vals])
            for labels, vals in value
        )

    async def binary(self, node: Binary) -> Any:
        lhs = await self.eval(node.lhs)
        rhs = await self.eval(node.rhs)
        op = node.op
        lt, rt = node.lhs.type, node.rhs.type
        if lt == "scalar" and rt == "scalar":
            return [_scalar_binop(op, a, b) for a, b in zip(lhs, rhs, strict=True)]
        if lt == "vector" and rt == "scalar":
            return self._vector_scalar(node, lhs, rhs, swap=False)
        if lt == "scalar" and rt == "vector":
            return self._vector_scalar(node, rhs, lhs, swap=True)
        if op in SET_OPS:
            return await self._set_op(node, lhs, rhs)
        return await self._vector_binop(node, lhs, rhs)

    def _vector_scalar(
        self, node: Binary, vec: VectorVal, scalar: ScalarVal, swap: bool
    ) -> VectorVal:
        op = node.op
        comparison = op in COMPARISON
        drop = op in ARITHMETIC or node.return_bool
        return_bool = node.return_bool
        out: VectorVal = []
        if self.n == 1 and op in _FAST_OPS:
            # Instant queries and rules (`x > 80`, `100 * x`): one value per series, the
            # operator as a plain function (what _elem_binop computes, without its dispatch).
            return self._vector_scalar_instant(op, vec, scalar[0], swap, return_bool)
        if self.n == 1:  # instant queries and rules: one value per series
            s = scalar[0]
            for labels, vals in vec:
                v = vals[0]
                if v is None:
                    continue
                value, keep = _elem_binop(op, s, v) if swap else _elem_binop(op, v, s)
                if comparison and swap:
                    value = v
                if return_bool:
                    value, keep = (1.0 if keep else 0.0), True
                if keep:
                    one: Vals = [value]
                    out.append((lbl.drop_name(labels) if drop else labels, one))
            return _merge(out) if drop else out
        for labels, vals in vec:
            new: Vals = [None] * self.n
            found = False
            for i, v in enumerate(vals):
                if v is None:
                    continue
                a, b = (scalar[i], v) if swap else (v, scalar[i])
                value, keep = _elem_binop(op, a, b)
                if comparison and swap:
                    value = v
                if return_bool:
                    value = 1.0 if keep else 0.0
                    keep = True
                if keep:
                    new[i] = value
                    found = True
            if found:
                out.append((lbl.drop_name(labels) if drop else labels, new))
        return _merge(out) if drop else out

    @staticmethod
    def _vector_scalar_instant(
        op: str, vec: VectorVal, s: float, swap: bool, return_bool: bool
    ) -> VectorVal:
        f = _FAST_OPS[op]
        drop_name = lbl.drop_name
        if op in ARITHMETIC:
            if swap:
                return _merge((drop_name(ls), [f(s, v)]) for ls, (v,) in vec if v is not None)
            return _merge((drop_name(ls), [f(v, s)]) for ls, (v,) in vec if v is not None)
        if return_bool:  # comparison with bool: 1 or 0 for every series, without the name
            if swap:
                return _merge(
                    (drop_name(ls), [1.0 if f(s, v) else 0.0]) for ls, (v,) in vec if v is not None
                )
            return _merge(
                (drop_name(ls), [1.0 if f(v, s) else 0.0]) for ls, (v,) in vec if v is not None
            )
        # A filter keeps the vector's own value and labels.
        if swap:
            return [(ls, vals) for ls, vals in vec if vals[0] is not None and f(s, vals[0])]
        return [(ls, vals) for ls, vals in vec if vals[0] is not None and f(vals[0], s)]

    def _signature(self, node: Binary) -> Callable[[Labels], Labels]:
        names = frozenset(node.matching)
        if node.on:
            return lambda labels: lbl.keep(labels, names)
        excluded = names | {METRIC_NAME}
        return lambda labels: lbl.without(labels, excluded)

    async def _set_op(self, node: Binary, lhs: VectorVal, rhs: VectorVal) -> VectorVal:
        sig = self._signature(node)
        lsig = [sig(labels) for labels, _ in lhs]
        rsig = [sig(labels) for labels, _ in rhs]
        out = _StepOutput(self.n)
        for i in range(self.n):
            await self.ctx.checkpoint()
            left = [k for k, (_, vals) in enumerate(lhs) if vals[i] is not None]
            right = [k for k, (_, vals) in enumerate(rhs) if vals[i] is not None]
            if node.op == "and":
                if not left or not right:
                    continue
                right_sigs = {rsig[k] for k in right}
                for k in left:
                    if lsig[k] in right_sigs:
                        out.add(lhs[k][0], i, lhs[k][1][i])  # type: ignore[arg-type]
            elif node.op == "or":
                left_sigs = {lsig[k] for k in left}
                for k in left:
                    out.add(lhs[k][0], i, lhs[k][1][i])  # type: ignore[arg-type]
                for k in right:
                    if rsig[k] not in left_sigs:
                        out.add(rhs[k][0], i, rhs[k][1][i])  # type: ignore[arg-type]
            else:
                right_sigs = {rsig[k] for k in right}
                for k in left:
                    if lsig[k] not in right_sigs:
                        out.add(lhs[k][0], i, lhs[k][1][i])  # type: ignore[arg-type]
        return out.result()

    async def _vector_binop(self, node: Binary, lhs: VectorVal, rhs: VectorVal) -> VectorVal:
        op = node.op
        card = node.card
        swapped = card == "one-to-many"
        if swapped:
            lhs, rhs = rhs, lhs
        sig = self._signature(node)
        lsig = [sig(labels) for labels, _ in lhs]
        rsig = [sig(labels) for labels, _ in rhs]
        drop_name = op in ARITHMETIC
        include = node.include
        matching = frozenset(node.matching)
        result_cache: dict[tuple[Labels, Labels], Labels] = {}

        def result_metric(left: Labels, right: Labels) -> Labels:
            cached = result_cache.get((left, right))
            if cached is not None:
                return cached
            out_labels = left
            if drop_name:
                out_labels = lbl.drop_name(out_labels)
            if card == "one-to-one":
                if node.on:
                    out_labels = lbl.keep(out_labels, matching)
                else:
                    out_labels = lbl.without(out_labels, matching)
            for name in include:
                out_labels = lbl.with_label(out_labels, name, lbl.get(right, name))
            if node.return_bool:
                out_labels = lbl.drop_name(out_labels)
            result_cache[(left, right)] = out_labels
            return out_labels

        out = _StepOutput(self.n)
        for i in range(self.n):
            await self.ctx.checkpoint()
            right_by_sig: dict[Labels, int] = {}
            any_left = False
            for _, vals in lhs:
                if vals[i] is not None:
                    any_left = True
                    break
            if not any_left:
                continue
            for k, (labels, vals) in enumerate(rhs):
                if vals[i] is None:
                    continue
                s = rsig[k]
                if s in right_by_sig:
                    side = "left" if swapped else "right"
                    other = rhs[right_by_sig[s]][0]
                    raise PromQLError(
                        f"found duplicate series for the match group {lbl.format_labels(s)} on the "
                        f"{side} hand-side of the operation: [{lbl.format_labels(labels)}, "
                        f"{lbl.format_labels(other)}];many-to-many matching not allowed: matching "
                        "labels must be unique on one side"
                    )
                right_by_sig[s] = k
            if not right_by_sig:
                continue
            matched: dict[Labels, set[Labels] | None] = {}
            for k, (labels, vals) in enumerate(lhs):
                vl = vals[i]
                if vl is None:
                    continue
                s = lsig[k]
                r = right_by_sig.get(s)
                if r is None:
                    continue
                rlabels, rvals = rhs[r]
                vr = rvals[i]
                assert vr is not None
                a, b = (vr, vl) if swapped else (vl, vr)
                value, keep = _elem_binop(op, a, b)
                if node.return_bool:
                    value = 1.0 if keep else 0.0
                elif not keep:
                    continue
                metric = result_metric(labels, rlabels)
                if card == "one-to-one":
                    if s in matched:
                        raise PromQLError(
                            "multiple matches for labels: many-to-one matching must be explicit "
                            "(group_left/group_right)"
                        )
                    matched[s] = None
                else:
                    inserted = matched.get(s)
                    if inserted is None:
                        inserted = matched[s] = set()
                    elif metric in inserted:
                        raise PromQLError(
                            "multiple matches for labels: "
                            "grouping labels must ensure unique matches"
                        )
                    inserted.add(metric)
                out.add(metric, i, value)
        return out.result()

    # --- aggregation ----------------------------------------------------------------------

    async def aggregate(self, node: Aggregate) -> VectorVal:
        op = node.op
        vec: VectorVal = await self.eval(node.expr)
        param: Any = None
        if node.param is not None:
            param = await self.eval(node.param)
        grouping = frozenset(node.grouping)
        if node.without:
            excluded = grouping | {METRIC_NAME}

            def group_key(labels: Labels) -> Labels:
                return lbl.without(labels, excluded)
        else:

            def group_key(labels: Labels) -> Labels:
                return lbl.keep(labels, grouping)

        if op == "count_values":
            return await self._count_values(node, vec, str(param), group_key)
        if self.n == 1 and op not in ("topk", "bottomk"):
            # Instant queries and rules: group the values directly; keys are unique per group.
            values: dict[Labels, list[float]] = {}
            for labels, vals in vec:
                v = vals[0]
                if v is None:
                    continue
                key = group_key(labels)
                members_of = values.get(key)
                if members_of is None:
                    values[key] = [v]
                else:
                    members_of.append(v)
            return [(key, [_aggregate_values(op, vs, param, 0)]) for key, vs in values.items()]
        keys = [group_key(labels) for labels, _ in vec]
        out = _StepOutput(self.n)
        for i in range(self.n):
            await self.ctx.checkpoint()
            groups: dict[Labels, list[tuple[Labels, float]]] = {}
            for k, (labels, vals) in enumerate(vec):
                v = vals[i]
                if v is None:
                    continue
                members = groups.get(keys[k])
                if members is None:
                    groups[keys[k]] = [(labels, v)]
                else:
                    members.append((labels, v))
            if not groups:
                continue
            if op in ("topk", "bottomk"):
                f = param[i]
                if not (f == f and -(2**63) <= f <= MAX_INT64):
                    raise PromQLError(f"Scalar value {_go_float(f)} overflows int64")
                k_count = int(f)
                if k_count < 1:
                    continue
                for members in groups.values():
                    for labels, v in _select_k(members, k_count, op == "topk"):
                        out.add(labels, i, v)
                continue
            for key, members in groups.items():
                out.add(key, i, _aggregate_values(op, [v for _, v in members], param, i))
        return out.result()

    async def _count_values(
        self,
        node: Aggregate,
        vec: VectorVal,
        value_label: str,
        group_key: Callable[[Labels], Labels],
    ) -> VectorVal:
        if not lbl.valid_label_name(value_label):
            raise PromQLError(f'invalid label name "{value_label}"')
        grouping = frozenset(node.grouping) | {value_label}
        out = _StepOutput(self.n)
        for i in range(self.n):
            await self.ctx.checkpoint()
            counts: dict[Labels, int] = {}
            for labels, vals in vec:
                v = vals[i]
                if v is None:
                    continue
                metric = lbl.with_label(labels, value_label, format_value(v))
                key = group_key(metric) if node.without else lbl.keep(metric, grouping)
                counts[key] = counts.get(key, 0) + 1
            for key, count in counts.items():
                out.add(key, i, float(count))
        return out.result()


# --- helpers ----------------------------------------------------------------------------------

# Binary operators as functions of (left, right), as _elem_binop computes them: arithmetic
# gives the value, a comparison whether the pair is kept.
_FAST_OPS: dict[str, Callable[[float, float], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": mathops.div,
    "^": mathops.power,
    "%": mathops.mod,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def _map_values(vec: VectorVal, fn: Callable[[float], float]) -> VectorVal:
    return _merge(
        (lbl.drop_name(labels), [None if v is None else fn(v) for v in vals])
        for labels, vals in vec
    )


def _map_values_at(vec: VectorVal, fn: Callable[[float, int], float]) -> VectorVal:
    return _merge(
        (lbl.drop_name(labels), [None if v is None else fn(v, i) for i, v in enumerate(vals)])
        for labels, vals in vec
    )


def _go_max(a: float, b: float) -> float:
    # Go's math.Max: NaN if either is NaN.
    if a != a or b != b:
        return math.nan
    return max(a, b)


def _go_min(a: float, b: float) -> float:
    if a != a or b != b:
        return math.nan
    return min(a, b)


def _go_float(v: float) -> str:
    return format_value(v)


def _elem_binop(op: str, a: float, b: float) -> tuple[float, bool]:
    if op == "+":
        return a + b, True
    if op == "-":
        return a - b, True
    if op == "*":
        return a * b, True
    if op == "/":
        return mathops.div(a, b), True
    if op == "^":
        return mathops.power(a, b), True
    if op == "%":
        return mathops.mod(a, b), True
    if op == "atan2":
        return mathops.atan2(a, b), True
    if op == "==":
        return a, a == b
    if op == "!=":
        return a, a != b
    if op == ">":
        return a, a > b
    if op == "<":
        return a, a < b
    if op == ">=":
        return a, a >= b
    if op == "<=":
        return a, a <= b
    raise PromQLError(f"operator {op!r} not allowed for operations between vectors")


def _scalar_binop(op: str, a: float, b: float) -> float:
    value, keep = _elem_binop(op, a, b)
    if op in COMPARISON:
        return 1.0 if keep else 0.0
    return value


def _aggregate_values(op: str, values: list[float], param: Any, i: int) -> float:
    first = values[0]
    if op == "sum":
        total = first
        for v in values[1:]:
            total += v
        return total
    if op == "avg":
        mean = first
        count = 1
        for v in values[1:]:
            count += 1
            if math.isinf(mean):
                if math.isinf(v) and (mean > 0) == (v > 0):
                    continue
                if not math.isinf(v) and v == v:
                    continue
            mean += v / count - mean / count
        return mean
    if op == "count":
        return float(len(values))
    if op == "group":
        return 1.0
    if op == "max":
        best = first
        for v in values[1:]:
            if best < v or best != best:
                best = v
        return best
    if op == "min":
        best = first
        for v in values[1:]:
            if best > v or best != best:
                best = v
        return best
    if op in ("stddev", "stdvar"):
        count = 1
        mean = first
        acc = 0.0
        for v in values[1:]:
            count += 1
            delta = v - mean
            mean += delta / count
            acc += delta * (v - mean)
        variance = acc / count
        return variance if op == "stdvar" else mathops.sqrt(variance)
    if op == "quantile":
        return quantile(param[i], values)
    raise PromQLError(f"unsupported aggregation {op!r}", "parse")


def _select_k(members: list[tuple[Labels, float]], k: int, top: bool) -> list[tuple[Labels, float]]:
    """topk/bottomk with Go's container/heap, so ties pick the same series as Prometheus."""

    def less(a: float, b: float) -> bool:
        if a != a:
            return True
        return a < b if top else a > b

    heap: list[tuple[Labels, float]] = [members[0]]

    def up(j: int) -> None:
        while j > 0:
            parent = (j - 1) // 2
            if not less(heap[j][1], heap[parent][1]):
                break
            heap[parent], heap[j] = heap[j], heap[parent]
            j = parent

    def down(i: int, n: int) -> None:
        while True:
            j1 = 2 * i + 1
            if j1 >= n:
                break
            j = j1
            j2 = j1 + 1
            if j2 < n and less(heap[j2][1], heap[j1][1]):
                j = j2
            if not less(heap[j][1], heap[i][1]):
                break
            heap[i], heap[j] = heap[j], heap[i]
            i = j

    for member in members[1:]:
        v = member[1]
        head = heap[0][1]
        better = head < v if top else head > v
        if len(heap) < k or better or head != head:
            if len(heap) == k:
                if k == 1:
                    heap[0] = member
                    continue
                last = len(heap) - 1
                heap[0], heap[last] = heap[last], heap[0]
                down(0, last)
                heap.pop()
            heap.append(member)
            up(len(heap) - 1)
    sign = -1.0 if top else 1.0
    return sorted(heap, key=lambda m: (1, 0.0) if m[1] != m[1] else (0, sign * m[1]))


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' bucketQuantile over (upper bound, cumulative count) pairs."""
    if q != q:
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets, key=lambda b: b[0])
    if not math.isinf(buckets[-1][0]):
        return math.nan
    merged: list[list[float]] = []
    for upper, count in buckets:
        if merged and merged[-1][0] == upper:
            merged[-1][1] += count
        else:
            merged.append([upper, count])
    highest = merged[0][1]
    for bucket in merged[1:]:
        if bucket[1] > highest:
            highest = bucket[1]
        elif bucket[1] < highest:
            bucket[1] = highest
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = len(merged) - 1
    for idx in range(len(merged) - 1):
        if merged[idx][1] >= rank:
            b = idx
            break
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    bucket_start = 0.0
    bucket_end = merged[b][0]
    count = merged[b][1]
    if b > 0:
        bucket_start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return bucket_start + (bucket_end - bucket_start) * (rank / count)


def _absent_labels(node: Node) -> Labels:
    if isinstance(node, MatrixSel):
        node = node.selector
    if not isinstance(node, VectorSel):
        return ()
    result: dict[str, str] = {}
    has: set[str] = set()
    for m in node.matchers:
        if m.name == METRIC_NAME:
            continue
        if m.op == "=" and m.name not in has:
            result[m.name] = m.value
            has.add(m.name)
        else:
            result.pop(m.name, None)
    return lbl.from_mapping(result)


_GROUP_REF = re.compile(r"\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+)")


def _expand(template: str, match: Any) -> str:
    """Go's regexp.Expand: $1, ${1}, $name, ${name}; $$ is a dollar; a bad $ stays literal."""
    out: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        i += 1
        if i < len(template) and template[i] == "$":
            out.append("$")
            i += 1
            continue
        ref = _GROUP_REF.match(template, i)
        if ref is None:
            out.append("$")
            continue
        name = ref.group(1) or ref.group(2)
        i = ref.end()
        if name.isdigit():
            index = int(name)
            if index <= (match.re.groups or 0):
                out.append(match.group(index) or "")
        elif name in match.re.groupindex:
            out.append(match.group(name) or "")
    return "".join(out)


def _days_in_month(seconds: int) -> float:
    t = datetime.fromtimestamp(seconds, UTC)
    return float(calendar.monthrange(t.year, t.month)[1])


def _date_part(attr: str) -> Callable[[int], float]:
    def part(seconds: int) -> float:
        t = datetime.fromtimestamp(seconds, UTC)
        if attr == "day_of_week":
            return float((t.weekday() + 1) % 7)
        if attr == "day_of_year":
            return float(t.timetuple().tm_yday)
        return float(getattr(t, attr))

    return part


_DATE_PARTS: dict[str, Callable[[int], float]] = {
    "day_of_month": _date_part("day"),
    "day_of_week": _date_part("day_of_week"),
    "day_of_year": _date_part("day_of_year"),
    "days_in_month": _days_in_month,
    "hour": _date_part("hour"),
    "minute": _date_part("minute"),
    "month": _date_part("month"),
    "year": _date_part("year"),
}
