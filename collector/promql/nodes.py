"""The engine's own expression tree, built once from promql-parser's AST.

Converting keeps the evaluator free of the binding's object model, lets us reject what we do not
support before evaluating anything, and makes parsed expressions cheap to cache and reuse
(rules evaluate the same expression every cycle). Durations and times are integer milliseconds,
as in Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vpsmon.collector.storage.query import Matcher

ValueType = Literal["vector", "scalar", "matrix", "string"]
AtKind = Literal["at", "start", "end"]


@dataclass(frozen=True, slots=True)
class At:
    """The @ modifier: a fixed time (``at``, ms) or the query's start() / end()."""

    kind: AtKind
    millis: int = 0


@dataclass(frozen=True, slots=True)
class NumberLit:
    value: float
    type: ValueType = "scalar"


@dataclass(frozen=True, slots=True)
class StringLit:
    value: str
    type: ValueType = "string"


@dataclass(frozen=True, slots=True)
class VectorSel:
    matchers: tuple[Matcher, ...]
    offset: int
    at: At | None
    type: ValueType = "vector"


@dataclass(frozen=True, slots=True)
class MatrixSel:
    selector: VectorSel
    range: int
    type: ValueType = "matrix"


@dataclass(frozen=True, slots=True)
class Subquery:
    expr: Node
    range: int
    step: int | None
    offset: int
    at: At | None
    type: ValueType = "matrix"


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Node, ...]
    type: ValueType


@dataclass(frozen=True, slots=True)
class Aggregate:
    op: str
    expr: Node
    param: Node | None
    grouping: tuple[str, ...]
    without: bool
    type: ValueType = "vector"


Cardinality = Literal["one-to-one", "many-to-one", "one-to-many", "many-to-many"]


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    lhs: Node
    rhs: Node
    return_bool: bool
    card: Cardinality
    on: bool
    matching: tuple[str, ...]
    include: tuple[str, ...]
    type: ValueType


@dataclass(frozen=True, slots=True)
class Unary:
    expr: Node
    type: ValueType


Node = NumberLit | StringLit | VectorSel | MatrixSel | Subquery | Call | Aggregate | Binary | Unary
