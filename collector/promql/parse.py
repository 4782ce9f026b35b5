"""Parse PromQL with promql-parser and convert it into the engine's tree (nodes.py).

The parser follows Prometheus' grammar; what it accepts but the engine cannot evaluate faithfully
(native-histogram functions, newer experimental syntax) is refused here with a parse error, so
an unsupported construct never gives a wrong answer (issue #8).
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from typing import Any

import promql_parser as pp

from vpsmon.collector.promql.errors import PromQLError, parse_error
from vpsmon.collector.promql.functions import AGGREGATIONS, FUNCTIONS
from vpsmon.collector.promql.nodes import (
    Aggregate,
    At,
    Binary,
    Call,
    Cardinality,
    MatrixSel,
    Node,
    NumberLit,
    StringLit,
    Subquery,
    Unary,
    ValueType,
    VectorSel,
)
from vpsmon.collector.storage.query import Matcher, MatchOp

MAX_QUERY_LENGTH = 64 * 1024

_MATCH_OPS: dict[str, MatchOp] = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
_CARDINALITY: dict[str, Cardinality] = {
    "OneToOne": "one-to-one",
    "ManyToOne": "many-to-one",
    "OneToMany": "one-to-many",
    "ManyToMany": "many-to-many",
}
_VALUE_TYPES: dict[str, ValueType] = {
    "Vector": "vector",
    "Scalar": "scalar",
    "Matrix": "matrix",
    "String": "string",
}


def parse_expr(text: str) -> Node:
    """Parse ``text`` into the engine's tree; raises PromQLError(kind="parse")."""
    if len(text) > MAX_QUERY_LENGTH:
        raise parse_error(f"query is longer than {MAX_QUERY_LENGTH} characters")
    return _parse_cached(text)


@lru_cache(maxsize=1)
def _register_functions() -> None:
    """Teach the parser Prometheus 2.x functions it does not know (process-global, once)."""
    matrix, scalar, vector = pp.ValueType.Matrix, pp.ValueType.Scalar, pp.ValueType.Vector
    pp.register_extra_functions([pp.Function("holt_winters", [matrix, scalar, scalar], vector)])


@lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Node:
    _register_functions()
    if not text.strip():
        raise parse_error("no expression found in input", 0)
    try:
        tree = pp.parse(text)
    except ValueError as exc:
        message = str(exc)
        raise parse_error(message, _position_of(text, message)) from None
    except BaseException as exc:  # the binding panics (pyo3 PanicException) on some inputs
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise parse_error(f"could not parse expression: {exc}") from None
    return _Converter(text).convert(tree)


def _position_of(text: str, message: str) -> int | None:
    """Where the parser's error is, when the message lets us find it (the binding gives none)."""
    match = re.search(r"function with name '([^']+)'", message)
    if match:
        found = re.search(rf"\b{re.escape(match.group(1))}\s*\(", text)
        if found:
            return found.start()
    if "end of input" in message:
        return len(text)
    if "unclosed left parenthesis" in message or "unexpected right parenthesis" in message:
        opened, stray = _parentheses(text)
        if "unclosed" in message and opened:
            return opened[-1]
        if stray is not None:
            return stray
    if "unterminated quoted string" in message:
        quote = message.rstrip()[-1:]
        found_at = text.rfind(quote) if quote in "\"'`" else -1
        return found_at if found_at >= 0 else None
    return None


def _parentheses(text: str) -> tuple[list[int], int | None]:
    """Offsets of unclosed "(" and of the first unmatched ")", outside quoted strings."""
    opened: list[int] = []
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c == "(":
            opened.append(i)
        elif c == ")":
            if not opened:
                return opened, i
            opened.pop()
        i += 1
    return opened, None


class _Converter:
    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, message: str, token: str | None = None) -> PromQLError:
        position = None
        if token:
            found = re.search(rf"\b{re.escape(token)}\b", self.text)
            position = found.start() if found else None
        return parse_error(message, position)

    def convert(self, e: Any) -> Node:
        kind = type(e).__name__
        method = getattr(self, f"_{kind}", None)
        if method is None:
            raise parse_error(f"unsupported expression {kind}")
        node: Node = method(e)
        return node

    def _ParenExpr(self, e: pp.ParenExpr) -> Node:
        return self.convert(e.expr)

    def _NumberLiteral(self, e: pp.NumberLiteral) -> Node:
        return NumberLit(float(e.val))

    def _StringLiteral(self, e: pp.StringLiteral) -> Node:
        return StringLit(e.val)

    def _UnaryExpr(self, e: pp.UnaryExpr) -> Node:
        inner = self.convert(e.expr)
        if inner.type not in ("vector", "scalar"):
            raise parse_error(
                "unary expression only allowed on expressions of type scalar or instant vector"
            )
        return Unary(inner, inner.type)

    def _VectorSelector(self, e: pp.VectorSelector) -> Node:
        matchers: list[Matcher] = []
        if e.name is not None:
            matchers.append(Matcher("__name__", "=", e.name))
        if e.matchers.or_matchers:
            raise self.fail("'or' inside label matchers is not supported")
        for m in e.matchers.matchers:
            op = _MATCH_OPS[str(m.op).rsplit(".", 1)[-1]]
            try:
                matchers.append(Matcher(m.name, op, m.value))
            except ValueError as exc:
                raise parse_error(str(exc)) from None
        return VectorSel(tuple(matchers), _millis(e.offset), self._at(e))

    def _MatrixSelector(self, e: pp.MatrixSelector) -> Node:
        selector = self._VectorSelector(e.vector_selector)
        assert isinstance(selector, VectorSel)
        return MatrixSel(selector, _millis(e.range))

    def _SubqueryExpr(self, e: pp.SubqueryExpr) -> Node:
        inner = self.convert(e.expr)
        step = _millis(e.step) if e.step is not None else None
        return Subquery(inner, _millis(e.range), step or None, _millis(e.offset), self._at(e))

    def _at(self, e: Any) -> At | None:
        try:
            at = e.at
            if at is None:
                return None
            kind = str(at.type).rsplit(".", 1)[-1]
            if kind == "Start":
                return At("start")
            if kind == "End":
                return At("end")
            return At("at", round(at.at.timestamp() * 1000))
        except BaseException as exc:  # negative @ times make the binding panic
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise self.fail("@ modifier times before 1970 are not supported", "@") from None

    def _Call(self, e: pp.Call) -> Node:
        name = e.func.name
        if name not in FUNCTIONS:
            raise self.fail(
                f"function {name!r} is not supported by vpsmon (see docs/promql.md)", name
            )
        args = tuple(self.convert(a) for a in e.args)
        return_type = _VALUE_TYPES[str(e.func.return_type).rsplit(".", 1)[-1]]
        return Call(name, args, return_type)

    def _AggregateExpr(self, e: pp.AggregateExpr) -> Node:
        op = str(e.op)
        if op not in AGGREGATIONS:
            raise self.fail(
                f"aggregation {op!r} is not supported by vpsmon (see docs/promql.md)", op
            )
        inner = self.convert(e.expr)
        param = self.convert(e.param) if e.param is not None else None
        grouping: tuple[str, ...] = ()
        without = False
        if e.modifier is not None:
            grouping = tuple(e.modifier.labels)
            without = str(e.modifier.type).endswith("Without")
        return Aggregate(op, inner, param, grouping, without)

    def _BinaryExpr(self, e: pp.BinaryExpr) -> Node:
        op = str(e.op)
        lhs = self.convert(e.lhs)
        rhs = self.convert(e.rhs)
        m = e.modifier
        card: Cardinality = "one-to-one"
        on = False
        matching: tuple[str, ...] = ()
        include: tuple[str, ...] = ()
        return_bool = False
        if m is not None:
            card = _CARDINALITY[str(m.card).rsplit(".", 1)[-1]]
            if m.matching is not None:
                on = str(m.matching.type).endswith("Include")
                matching = tuple(m.matching.labels)
            include = tuple(m.group_labels or ())
            return_bool = bool(m.return_bool)
            fill = m.fill_values
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                raise self.fail("fill modifiers are not supported", "fill")
        if op in ("and", "or", "unless"):
            card = "many-to-many"
        both_scalar = lhs.type == "scalar" and rhs.type == "scalar"
        return Binary(
            op,
            lhs,
            rhs,
            return_bool,
            card,
            on,
            matching,
            include,
            "scalar" if both_scalar else "vector",
        )


def _millis(delta: timedelta | None) -> int:
    if delta is None:
        return 0
    return delta // timedelta(milliseconds=1)
