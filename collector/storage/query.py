"""What readers of stored samples (PromQL engine, dashboards, API) ask the storage for.

This module is the contract between the storage and everything that reads it. Readers depend
on `SampleSource` and these value types only, never on table layouts, so the storage can
change how it keeps samples (raw partitions, compressed chunks, rollups, TimescaleDB) freely.

Label matching follows Prometheus: ``=``, ``!=``, ``=~``, ``!~``; regular expressions are RE2
(Go's syntax, as in Prometheus) and fully anchored, and a label that is absent matches as the
empty string (https://prometheus.io/docs/prometheus/latest/querying/basics/#instant-vector-selectors).
Staleness markers (Prometheus' StaleNaN bit pattern) are returned like any value; use
`is_stale_marker` to recognise them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol

import re2

MatchOp = Literal["=", "!=", "=~", "!~"]

# Prometheus' staleness marker: a NaN with this exact bit pattern (model/value/value.go).
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]


def is_stale_marker(value: float) -> bool:
    return math.isnan(value) and struct.unpack("<Q", struct.pack("<d", value))[0] == STALE_NAN_BITS


# RE2 (google-re2), not Python's re: the syntax Prometheus uses (Go's regexp is RE2), and
# matching in linear time, so a hostile selector such as {a=~"(x+)+y"} sent to the API cannot
# pin the collector's CPU with exponential backtracking (ReDoS).
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@lru_cache(maxsize=4096)
def _anchored(pattern: str) -> Any:
    # A module-level cache: Matcher has __slots__, so it cannot cache on the instance.
    try:
        return re2.compile(f"^(?s:{pattern})$", _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"invalid regular expression {pattern!r}: {detail}") from None


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher; ``name`` may be ``__name__`` for the metric name."""

    name: str
    op: MatchOp
    value: str

    def __post_init__(self) -> None:
        if self.op not in ("=", "!=", "=~", "!~"):
            raise ValueError(f"unknown match operator {self.op!r}")
        if self.op in ("=~", "!~"):
            _anchored(self.value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _anchored(self.value).match(actual) is not None
        return found if self.op == "=~" else not found


@dataclass(slots=True)
class SeriesSamples:
    """One series and its samples in a time range, oldest first.

    ``labels`` includes ``__name__``. Timestamps are Unix seconds (float, millisecond
    precision as Prometheus keeps them).
    """

    labels: dict[str, str]
    timestamps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    # The labels as a sorted tuple of (name, value) without empty values, when the source has
    # it at hand (the head): the PromQL engine keys series by it instead of sorting again.
    key: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class RangeBlock:
    """The series a selection matches and their samples in ``[start, end]`` as two matrices,
    a row per series and a column per sample slot: what the head gives the PromQL engine so a
    rule cycle computes over every series at once in numpy instead of a Python step per series
    (issue #8: 200 rules over 1,000 servers in under a second).

    - ``keys``: a row's label set in the engine's form (sorted (name, value) pairs including
      ``__name__``, empty values left out), rows in label-set order. While the selection
      matches the same series the head hands out the *same* tuple object, so the engine may key
      caches of label work (signatures, groupings, join plans) on ``id(keys)`` (keeping a
      reference to ``keys`` so the id is not reused).
    - ``ts``: float64 (rows × width), Unix seconds; NaN where a cell holds no sample. The
      non-NaN cells of a row are in ascending time order and inside ``[start, end]``.
    - ``vs``: float64 (rows × width), the value of each cell that has a sample (a value may be
      NaN, or a staleness marker: compare the bits with ``STALE_NAN_BITS``); undefined where
      ``ts`` is NaN.

    A row may have no sample at all (its series matched but has none in the range): the row is
    kept so ``keys`` stays the same object from cycle to cycle.
    """

    keys: tuple[tuple[tuple[str, str], ...], ...]
    ts: Any  # numpy.ndarray, float64, shape (len(keys), width)
    vs: Any  # numpy.ndarray, float64, same shape


class SampleSource(Protocol):
    """Read access to stored samples (head and database together)."""

    async def select(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[SeriesSamples]:
        """Every series matching all ``matchers`` with its samples in ``[start, end]``.

        Series with no sample in the range are left out.
        """
        ...

    async def series(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[dict[str, str]]:
        """Label sets of the series matching ``matchers`` that have samples in the range."""
        ...

    async def label_names(self, matchers: Sequence[Matcher], start: float, end: float) -> list[str]:
        """Sorted label names (including ``__name__``) of the matching series."""
        ...

    async def label_values(
        self, name: str, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[str]:
        """Sorted distinct values of label ``name`` among the matching series."""
        ...
