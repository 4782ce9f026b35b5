"""Columnar evaluation of instant queries: every series of a node at once, in numpy.

Rules are instant queries evaluated every cycle over the same selections (issue #8: 200 rules
over 1,000 servers in under a second). The step-wise evaluator (engine.py `_Evaluator`) spends a
Python step on every series at every node; here an instant vector is a `Column`: the label sets
of its rows, their values and which rows are present, as arrays. Selectors read the head's
`RangeBlock`s (collector/storage/query.py), range functions run as numpy kernels
(kernels.py), and operators and aggregations work on whole arrays.

What does not depend on the values — a row's labels without the metric name, its group in an
aggregation, which right-hand row a left-hand row matches — depends only on the rows' label
sets. The head hands out the same ``keys`` tuple while a selection matches the same series, so
that work is done once and kept in `Plans`, keyed by the identity of the keys tuple, and a cycle
does no Python work per series. Keys built anew (from a source without blocks, or after a rare
merge) are not "stable" and their plans are computed each time, never kept.

Exactness: every value is computed with the same float operations in the same order as the
step-wise evaluator (which follows Prometheus), so both agree bit for bit;
tests/collector/test_promql_columnar.py checks it. Whatever this module does not implement
(and every rare case that would raise an error, so the message is the step-wise one) is handed
to the step-wise evaluator with the children already evaluated here (`_Evaluator.injected`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from vpsmon.collector.promql import kernels, mathops
from vpsmon.collector.promql import labels as lbl
from vpsmon.collector.promql.errors import PromQLError
from vpsmon.collector.promql.functions import RANGE_FUNCTIONS, SIMPLE_FUNCTIONS, Window, quantile
from vpsmon.collector.promql.labels import METRIC_NAME, Labels
from vpsmon.collector.promql.nodes import (
    Aggregate,
    Binary,
    Call,
    MatrixSel,
    Node,
    NumberLit,
    Unary,
    VectorSel,
)
from vpsmon.collector.storage.query import RangeBlock

Keys = tuple[Labels, ...]


_EMPTY_KEYS: Keys = ()
_NO_VALUES = np.empty(0)
_NO_ROWS = np.empty(0, dtype=bool)


class Column:
    """An instant vector at one time: row i is ``keys[i]`` with ``values[i]`` if
    ``present[i]``. Among present rows no two label sets are equal. Arrays are never changed
    in place once a Column is built (columns are shared through the evaluation cache)."""

    __slots__ = ("keys", "values", "present", "stable")

    def __init__(self, keys: Keys, values: Any, present: Any, stable: bool) -> None:
        self.keys = keys
        self.values = values
        self.present = present
        self.stable = stable  # keys is the same object next cycle while the series are

    @classmethod
    def empty(cls) -> Column:
        return cls(_EMPTY_KEYS, _NO_VALUES, _NO_ROWS, True)

    def to_vector(self) -> list[tuple[Labels, list[float | None]]]:
        """The step-wise evaluator's form: (labels, [value]) of the present rows, in order."""
        rows = np.flatnonzero(self.present)
        keys = self.keys
        return [
            (keys[i], [v]) for i, v in zip(rows.tolist(), self.values[rows].tolist(), strict=True)
        ]

    @classmethod
    def from_vector(cls, vec: list[tuple[Labels, list[float | None]]]) -> Column:
        keys = tuple(labels for labels, _ in vec)
        present = np.fromiter((vals[0] is not None for _, vals in vec), bool, len(vec))
        values = np.fromiter(
            (math.nan if vals[0] is None else vals[0] for _, vals in vec), float, len(vec)
        )
        return cls(keys, values, present, False)


class Plans:
    """Label work that depends only on label sets, kept per keys object (by identity; the
    entry holds the keys so its id cannot be reused while kept).

    Bounded by the rows it covers, in two generations: when the current one has covered
    ``MAX_ROWS`` rows it becomes the previous one and the one before is dropped; an entry found
    in the previous generation moves to the current one. Plans of label sets that no longer
    exist (series came or went, so the head made new keys) are gone after two turns, while
    those a rule cycle keeps using stay, so series churn cannot grow it without limit."""

    MAX_ROWS = 2_000_000

    def __init__(self) -> None:
        self.entries: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any]] = {}
        self.previous: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any]] = {}
        self.rows = 0

    def _find(self, key: tuple[Any, ...], parts: tuple[Any, ...]) -> tuple[bool, Any]:
        found = self.entries.get(key)
        if found is None:
            found = self.previous.pop(key, None)
            if found is None or not all(a is b for a, b in zip(found[0], parts, strict=True)):
                return False, None
            self._keep(key, found[0], found[1])
        elif not all(a is b for a, b in zip(found[0], parts, strict=True)):
            return False, None
        return True, found[1]

    def _keep(self, key: tuple[Any, ...], parts: tuple[Any, ...], value: Any) -> None:
        rows = 1 + sum(len(p) for p in parts if isinstance(p, tuple))
        if self.rows + rows > self.MAX_ROWS:
            self.previous, self.entries, self.rows = self.entries, {}, 0
        self.entries[key] = (parts, value)
        self.rows += rows

    def text(self, node: Node) -> str:
        """``repr(node)``, what the evaluation cache keys a subexpression by (it tells -0.0 from
        0.0, which a hash does not), kept per node object: rules parse to the same nodes every
        cycle (parse.py caches them), and a repr costs microseconds per level of the tree."""
        key = ("repr", id(node))
        hit, text = self._find(key, (node,))
        if not hit:
            text = repr(node)
            self._keep(key, (node,), text)
        return text

    def get(self, parts: tuple[Keys, ...], tag: Any, stable: bool, build: Callable[[], Any]) -> Any:
        if not stable:
            return build()
        key = (*map(id, parts), tag)
        hit, value = self._find(key, parts)
        if not hit:
            value = build()
            self._keep(key, parts, value)
        return value


class _Fallback(Exception):
    """This node (in this evaluation) is left to the step-wise evaluator."""


def _duplicates(keys: Keys) -> Any:
    """None if the label sets are all different, else a group id per row (equal sets, equal
    ids), to check whether two of them are present at once."""
    index: dict[Labels, int] = {}
    ids = [index.setdefault(k, len(index)) for k in keys]
    if len(index) == len(keys):
        return None
    return np.array(ids, dtype=np.intp)


def _present_twice(groups: Any, present: Any) -> bool:
    if groups is None:
        return False
    g = groups[present]
    return len(np.unique(g)) < len(g)


def _dropped(keys: Keys) -> tuple[Keys, Any]:
    out = tuple(map(lbl.drop_name, keys))
    return out, _duplicates(out)


def _block_from_series(raw: list[tuple[Labels, list[float], list[float]]]) -> RangeBlock:
    """A RangeBlock of series fetched as lists (a source without blocks: the database)."""
    width = max((len(ts) for _, ts, _ in raw), default=0)
    ts_m = np.full((len(raw), width), np.nan)
    vs_m = np.full((len(raw), width), np.nan)
    for i, (_, ts, vs) in enumerate(raw):
        ts_m[i, : len(ts)] = ts
        vs_m[i, : len(vs)] = vs
    return RangeBlock(tuple(labels for labels, _, _ in raw), ts_m, vs_m)


# --- elementwise operators, as engine._elem_binop computes them ------------------------------


def _power(a: Any, b: Any) -> Any:
    return _elementwise(mathops.power, a, b)


def _mod(a: Any, b: Any) -> Any:
    return _elementwise(mathops.mod, a, b)


def _atan2(a: Any, b: Any) -> Any:
    return _elementwise(mathops.atan2, a, b)


def _elementwise(fn: Callable[[float, float], float], a: Any, b: Any) -> Any:
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    return np.fromiter(map(fn, a.tolist(), b.tolist()), float, a.size)


def _divide(a: Any, b: Any) -> Any:
    # IEEE division: what mathops.div spells out for Python (x/0 is ±Inf, 0/0 and NaN/0 NaN).
    with np.errstate(all="ignore"):
        return np.divide(a, b)


_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": _divide,
    "^": _power,
    "%": _mod,
    "atan2": _atan2,
}
# Arithmetic drops the metric name; atan2 keeps it (Prometheus v2.42, engine.ARITHMETIC).
_DROPS_NAME = frozenset({"+", "-", "*", "/", "%", "^"})
_COMPARISON: dict[str, Callable[[Any, Any], Any]] = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}


def _arith(op: str, a: Any, b: Any) -> Any:
    with np.errstate(all="ignore"):
        return _ARITHMETIC[op](a, b)


def _compare(op: str, a: Any, b: Any) -> Any:
    with np.errstate(invalid="ignore"):
        return _COMPARISON[op](a, b)


# --- the evaluator ----------------------------------------------------------------------------


class ColumnarEvaluator:
    """Evaluates one instant query (one step) over Columns; ``classic`` is the step-wise
    evaluator of the same query, for what is not done here."""

    def __init__(self, classic: Any, plans: Plans) -> None:
        self.classic = classic
        self.ctx = classic.ctx
        self.t: int = classic.steps[0]
        self.plans = plans

    async def eval(self, node: Node) -> Any:
        """A Column for a vector, a float for a scalar, a str for a string."""
        ctx = self.ctx
        await ctx.checkpoint()
        cache = ctx.cache
        if cache is None or not cache.subexpressions or isinstance(node, NumberLit):
            return await self._eval_or_fallback(node)
        key = ("col", self.plans.text(node), self.t, ctx.query_start, ctx.query_end)
        return await ctx.shared(key, lambda: self._eval_or_fallback(node))

    async def _eval_or_fallback(self, node: Node) -> Any:
        try:
            return await self._eval(node)
        except _Fallback:
            return await self.fallback(node)

    async def _eval(self, node: Node) -> Any:
        if isinstance(node, NumberLit):
            return node.value
        if node.type not in ("vector", "scalar"):
            raise _Fallback
        if isinstance(node, VectorSel):
            return await self.vector_selector(node)
        if isinstance(node, Call):
            return await self.call(node)
        if isinstance(node, Aggregate):
            return await self.aggregate(node)
        if isinstance(node, Binary):
            return await self.binary(node)
        if isinstance(node, Unary):
            value = await self.eval(node.expr)
            if node.type == "scalar":
                return -value
            keys, groups = self.dropped(value)
            return self._merged(keys, -value.values, value.present, value.stable, groups)
        raise _Fallback

    # --- the step-wise evaluator for the rest -------------------------------------------

    async def fallback(self, node: Node) -> Any:
        """``node`` by the step-wise evaluator, its vector and scalar children evaluated here
        first and handed over."""
        injected: dict[int, Any] = {}
        for child in _children(node):
            if child.type in ("vector", "scalar") and not isinstance(child, NumberLit):
                value = await self.eval(child)
                injected[id(child)] = value.to_vector() if isinstance(value, Column) else [value]
        classic = self.classic
        previous = classic.injected
        classic.injected = injected
        try:
            value = await classic._eval(node)
        finally:
            classic.injected = previous
        if node.type == "scalar":
            return value[0]
        if node.type == "vector":
            return Column.from_vector(value)
        return value

    # --- selectors ----------------------------------------------------------------------

    def _reference(self, sel: VectorSel) -> int:
        return self.classic._reference_times(sel.at, sel.offset)[0]

    async def block(self, sel: VectorSel, mint: int, maxt: int) -> tuple[RangeBlock, bool]:
        """The selection's samples in [mint, maxt] (ms) and whether its keys are stable."""
        ctx = self.ctx
        cache = ctx.cache
        key = ("block", sel.matchers, mint, maxt)
        if cache is not None:
            found = cache.lookup(key)
            if found is not None:
                return found
        select_block = getattr(ctx.source, "select_block", None)
        block = None
        if select_block is not None:
            block = select_block(sel.matchers, mint / 1000, maxt / 1000)
            if inspect.isawaitable(block):
                block = await block
        if block is not None:
            ctx.count(int(np.count_nonzero(~np.isnan(block.ts))))
            result = (block, True)
        else:
            result = (_block_from_series(await self.classic.fetch(sel, mint, maxt)), False)
        if cache is not None:
            cache.store(key, result)
        return result

    async def vector_selector(self, sel: VectorSel, want_time: bool = False) -> Column:
        ref = self._reference(sel)
        low = ref - self.ctx.lookback
        block, stable = await self.block(sel, low, ref)
        values, present = kernels.instant(block.ts, block.vs, low / 1000, ref / 1000, want_time)
        return Column(block.keys, values, present, stable)

    # --- label work kept per keys object ------------------------------------------------

    def dropped(self, col: Column) -> tuple[Keys, Any]:
        return self.plans.get((col.keys,), "drop_name", col.stable, lambda: _dropped(col.keys))

    def _merged(self, keys: Keys, values: Any, present: Any, stable: bool, groups: Any) -> Column:
        """A Column whose rows' labels may have become equal (the name dropped): two present
        at once is the step-wise evaluator's error (engine._merge)."""
        if _present_twice(groups, present):
            raise _Fallback
        return Column(keys, values, present, stable)

    # --- functions ----------------------------------------------------------------------

    async def call(self, node: Call) -> Any:
        name = node.func
        args = node.args
        if name in RANGE_FUNCTIONS and isinstance(args[next_matrix(node)], MatrixSel):
            return await self.range_function(node)
        if name in SIMPLE_FUNCTIONS:
            col = await self.eval(args[0])
            fn = SIMPLE_FUNCTIONS[name]
            rows = np.flatnonzero(col.present)
            values = col.values.copy()
            values[rows] = np.fromiter(map(fn, col.values[rows].tolist()), float, len(rows))
            keys, groups = self.dropped(col)
            return self._merged(keys, values, col.present, col.stable, groups)
        if name == "time":
            return self.t / 1000
        if name == "vector":
            return Column(((),), np.array([await self.eval(args[0])]), np.ones(1, bool), True)
        if name == "scalar":
            col = await self.eval(args[0])
            rows = np.flatnonzero(col.present)
            return float(col.values[rows[0]]) if len(rows) == 1 else math.nan
        if name == "timestamp" and isinstance(args[0], VectorSel):
            col = await self.vector_selector(args[0], want_time=True)
            keys, groups = self.dropped(col)
            return self._merged(keys, col.values, col.present, col.stable, groups)
        if name in ("clamp_min", "clamp_max"):
            col = await self.eval(args[0])
            bound = float(await self.eval(args[1]))
            v = col.values
            if name == "clamp_min":  # engine._go_max(bound, v): NaN if either is, else max()
                values = np.where(v > bound, v, bound)
            else:
                values = np.where(v < bound, v, bound)
            if bound != bound:
                values = np.full(len(v), math.nan)
            else:
                values = np.where(np.isnan(v), math.nan, values)
            keys, groups = self.dropped(col)
            return self._merged(keys, values, col.present, col.stable, groups)
        if name == "absent":
            col = await self.eval(args[0])
            if col.present.any():
                return Column.empty()
            from vpsmon.collector.promql.engine import _absent_labels

            labels = _absent_labels(args[0])
            return Column((labels,), np.ones(1), np.ones(1, bool), False)
        raise _Fallback

    async def range_function(self, node: Call) -> Column:
        name = node.func
        index = next_matrix(node)
        params = tuple([float(await self.eval(a)) for i, a in enumerate(node.args) if i != index])
        arg = node.args[index]
        assert isinstance(arg, MatrixSel)
        end = self._reference(arg.selector)
        start = end - arg.range
        block, stable = await self.block(arg.selector, start, end)
        window = Window(self.t, start, end, arg.range, params)
        if block.ts.size:
            values, present = kernels.range_function(name, block.ts, block.vs, window)
        else:  # no series, or none with a sample in the range
            values, present = np.full(len(block.keys), math.nan), np.zeros(len(block.keys), bool)
        col = Column(block.keys, values, present, stable)
        if name == "last_over_time":
            return col
        keys, groups = self.dropped(col)
        if _present_twice(groups, present):
            raise PromQLError("vector cannot contain metrics with the same labelset")
        return Column(keys, values, present, stable)

    # --- aggregation --------------------------------------------------------------------

    async def aggregate(self, node: Aggregate) -> Column:
        op = node.op
        if op in ("topk", "bottomk", "count_values"):
            raise _Fallback
        col = await self.eval(node.expr)
        param = float(await self.eval(node.param)) if node.param is not None else None
        grouping = frozenset(node.grouping)
        tag = ("group", node.without, grouping)
        gid, out_keys = self.plans.get(
            (col.keys,), tag, col.stable, lambda: _group_plan(col.keys, node.without, grouping)
        )
        rows = np.flatnonzero(col.present)
        n = len(out_keys)
        if len(rows) == 0:
            return Column(out_keys, np.full(n, math.nan), np.zeros(n, bool), col.stable)
        g = gid[rows]
        v = col.values[rows]
        counts = np.bincount(g, minlength=n)
        present = counts > 0
        if op == "count":
            return Column(out_keys, counts.astype(float), present, col.stable)
        if op == "group":
            return Column(out_keys, np.where(present, 1.0, math.nan), present, col.stable)
        values = _aggregate(op, g, v, n, counts, param)
        return Column(out_keys, values, present, col.stable)

    # --- operators ----------------------------------------------------------------------

    async def binary(self, node: Binary) -> Any:
        lhs = await self.eval(node.lhs)
        rhs = await self.eval(node.rhs)
        op = node.op
        lt, rt = node.lhs.type, node.rhs.type
        if lt == "scalar" and rt == "scalar":
            from vpsmon.collector.promql.engine import _scalar_binop

            return _scalar_binop(op, lhs, rhs)
        if lt == "vector" and rt == "scalar":
            return self._vector_scalar(node, lhs, rhs, swap=False)
        if lt == "scalar" and rt == "vector":
            return self._vector_scalar(node, rhs, lhs, swap=True)
        if op in ("and", "or", "unless"):
            return self._set_op(node, lhs, rhs)
        return self._vector_binop(node, lhs, rhs)

    def _vector_scalar(self, node: Binary, col: Column, s: float, swap: bool) -> Column:
        op = node.op
        v = col.values
        a, b = (s, v) if swap else (v, s)
        if op in _COMPARISON:
            keep = _compare(op, a, b)
            if node.return_bool:
                keys, groups = self.dropped(col)
                return self._merged(keys, keep.astype(float), col.present, col.stable, groups)
            return Column(col.keys, v, col.present & keep, col.stable)
        if op not in _ARITHMETIC:
            raise _Fallback
        values = _arith(op, a, b)
        if op not in _DROPS_NAME:
            return Column(col.keys, values, col.present, col.stable)
        keys, groups = self.dropped(col)
        return self._merged(keys, values, col.present, col.stable, groups)

    def _signatures(self, node: Binary, left: Column, right: Column) -> tuple[Any, Any, int]:
        """Match-group ids of both sides' rows, in one numbering."""
        names = frozenset(node.matching)
        on = node.on

        def build() -> tuple[Any, Any, int]:
            if on:
                sig: Callable[[Labels], Labels] = lambda labels: lbl.keep(labels, names)  # noqa: E731
            else:
                excluded = names | {METRIC_NAME}
                sig = lambda labels: lbl.without(labels, excluded)  # noqa: E731
            index: dict[Labels, int] = {}
            ls = [index.setdefault(sig(k), len(index)) for k in left.keys]
            rs = [index.setdefault(sig(k), len(index)) for k in right.keys]
            return np.array(ls, np.intp), np.array(rs, np.intp), len(index)

        return self.plans.get(
            (left.keys, right.keys), ("sig", on, names), left.stable and right.stable, build
        )

    def _set_op(self, node: Binary, left: Column, right: Column) -> Column:
        lsig, rsig, n = self._signatures(node, left, right)
        stable = left.stable and right.stable
        if node.op == "or":
            in_left = np.zeros(n, bool)
            in_left[lsig[left.present]] = True
            keys = self.plans.get(
                (left.keys, right.keys), "concat", stable, lambda: left.keys + right.keys
            )
            present = np.concatenate((left.present, right.present & ~in_left[rsig]))
            values = np.concatenate((left.values, right.values))
            return Column(keys, values, present, stable)
        in_right = np.zeros(n, bool)
        in_right[rsig[right.present]] = True
        if node.op == "and":
            present = left.present & in_right[lsig]
        else:
            present = left.present & ~in_right[lsig]
        return Column(left.keys, left.values, present, left.stable)

    def _vector_binop(self, node: Binary, left: Column, right: Column) -> Column:
        op = node.op
        swapped = node.card == "one-to-many"
        if swapped:
            left, right = right, left
        if node.card == "many-to-many" or (op not in _ARITHMETIC and op not in _COMPARISON):
            raise _Fallback
        if not left.present.any():
            return Column.empty()
        plan = self.plans.get(
            (left.keys, right.keys),
            (
                "join",
                op in _DROPS_NAME,
                node.card,
                node.on,
                node.matching,
                node.include,
                node.return_bool,
            ),  # fmt: skip
            left.stable and right.stable,
            lambda: _join_plan(node, left.keys, right.keys),
        )
        if plan is None:  # a match group with several right-hand rows: the step-wise path
            raise _Fallback
        cand, match, out_keys, left_sig_dups, out_dups = plan
        lp = left.present[cand] & right.present[match]
        lv, rv = left.values[cand], right.values[match]
        a, b = (rv, lv) if swapped else (lv, rv)
        if op in _COMPARISON:
            keep = _compare(op, a, b)
            if node.return_bool:
                values, present = keep.astype(float), lp
            else:
                values, present = a, lp & keep
        else:
            values, present = _arith(op, a, b), lp
        # Two left rows of one match group (one-to-one), or two equal result label sets:
        # the step-wise evaluator raises the exact error.
        if _present_twice(left_sig_dups, present) or _present_twice(out_dups, present):
            raise _Fallback
        return Column(out_keys, values, present, left.stable and right.stable)


def next_matrix(node: Call) -> int:
    return next(i for i, a in enumerate(node.args) if a.type == "matrix")


def _children(node: Node) -> list[Node]:
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, Aggregate):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, Binary):
        return [node.lhs, node.rhs]
    if isinstance(node, Unary):
        return [node.expr]
    return []


def _group_plan(keys: Keys, without: bool, grouping: frozenset[str]) -> tuple[Any, Keys]:
    if without:
        excluded = grouping | {METRIC_NAME}
        group_key: Callable[[Labels], Labels] = lambda labels: lbl.without(labels, excluded)  # noqa: E731
    else:
        group_key = lambda labels: lbl.keep(labels, grouping)  # noqa: E731
    index: dict[Labels, int] = {}
    gid = [index.setdefault(group_key(k), len(index)) for k in keys]
    return np.array(gid, np.intp), tuple(index)


def _join_plan(node: Binary, left: Keys, right: Keys) -> tuple[Any, Any, Keys, Any, Any] | None:
    """For a vector-vector operator: the left rows that have a right row in their match group
    (``cand``), that row (``match``), each pair's result labels, and duplicate groups of left
    match groups (one-to-one) and of result labels, or None if some match group has several
    right rows (only the step-wise evaluator knows which are present together)."""
    names = frozenset(node.matching)
    if node.on:
        sig: Callable[[Labels], Labels] = lambda labels: lbl.keep(labels, names)  # noqa: E731
    else:
        excluded = names | {METRIC_NAME}
        sig = lambda labels: lbl.without(labels, excluded)  # noqa: E731
    by_sig: dict[Labels, int] = {}
    for k, labels in enumerate(right):
        s = sig(labels)
        if s in by_sig:
            return None
        by_sig[s] = k
    drop = node.op in _DROPS_NAME
    one_to_one = node.card == "one-to-one"
    cand: list[int] = []
    match: list[int] = []
    out: list[Labels] = []
    sigs: list[Labels] = []
    for k, labels in enumerate(left):
        s = sig(labels)
        r = by_sig.get(s)
        if r is None:
            continue
        cand.append(k)
        match.append(r)
        sigs.append(s)
        # engine._vector_binop's result_metric
        metric = lbl.drop_name(labels) if drop else labels
        if one_to_one:
            metric = lbl.keep(metric, names) if node.on else lbl.without(metric, names)
        for name in node.include:
            metric = lbl.with_label(metric, name, lbl.get(right[r], name))
        if node.return_bool:
            metric = lbl.drop_name(metric)
        out.append(metric)
    out_keys = tuple(out)
    return (
        np.array(cand, np.intp),
        np.array(match, np.intp),
        out_keys,
        _duplicates(tuple(sigs)) if one_to_one else None,
        _duplicates(out_keys),
    )


# --- aggregation over present rows: g (group of each), v (values), in input order -----------


def _aggregate(op: str, g: Any, v: Any, n: int, counts: Any, param: float | None) -> Any:
    """engine._aggregate_values for every group at once, in the same order of operations:
    the members of a group are folded in input order, all groups side by side (a loop over
    the members' rank within their group, as many turns as the largest group has members)."""
    order = np.argsort(g, kind="stable")
    gs, vs = g[order], v[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(len(gs)) - starts[gs]
    largest = int(counts.max())
    if op == "quantile" or largest > 64:
        # Few large groups: fold each in Python (a turn per rank would cost more).
        out = np.full(n, math.nan)
        bounds = np.concatenate((starts, [len(gs)]))
        values = vs.tolist()
        for group in np.flatnonzero(counts).tolist():
            members = values[bounds[group] : bounds[group] + counts[group]]
            out[group] = _fold(op, members, param)
        return out
    first = rank == 0
    acc = np.full(n, math.nan)
    acc[gs[first]] = vs[first]
    if op == "sum":
        for r in range(1, largest):
            at = rank == r
            groups = gs[at]
            acc[groups] = acc[groups] + vs[at]
        return acc
    if op in ("max", "min"):
        for r in range(1, largest):
            at = rank == r
            groups, x = gs[at], vs[at]
            best = acc[groups]
            better = (best < x) if op == "max" else (best > x)
            acc[groups] = np.where(better | np.isnan(best), x, best)
        return acc
    if op == "avg":
        with np.errstate(all="ignore"):
            for r in range(1, largest):
                at = rank == r
                groups, x = gs[at], vs[at]
                mean = acc[groups]
                count = float(r + 1)
                inf = np.isinf(mean)
                skip = inf & ((np.isinf(x) & ((mean > 0) == (x > 0))) | (~np.isinf(x) & (x == x)))
                acc[groups] = np.where(skip, mean, mean + (x / count - mean / count))
        return acc
    if op in ("stddev", "stdvar"):
        aux = np.zeros(n)
        with np.errstate(all="ignore"):
            for r in range(1, largest):
                at = rank == r
                groups, x = gs[at], vs[at]
                mean = acc[groups]
                delta = x - mean
                mean = mean + delta / float(r + 1)
                acc[groups] = mean
                aux[groups] = aux[groups] + delta * (x - mean)
            variance = aux / counts
        if op == "stdvar":
            return variance
        return np.fromiter(map(mathops.sqrt, variance.tolist()), float, n)
    raise PromQLError(f"unsupported aggregation {op!r}", "parse")


def _fold(op: str, values: list[float], param: float | None) -> float:
    if op == "quantile":
        return quantile(param if param is not None else math.nan, values)
    from vpsmon.collector.promql.engine import _aggregate_values

    return _aggregate_values(op, values, None, 0)
