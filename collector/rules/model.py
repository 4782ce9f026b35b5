"""What the rule stages exchange: query results, output samples, and the callables they call.

Like Prometheus' rules package, the rules depend on a query function, an appender and a
notify function, never on the engine, the storage or the notifiers themselves
(STYLE.md: stages talk through small callables).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Labels = tuple[tuple[str, str], ...]


def labels_key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


@dataclass(frozen=True, slots=True)
class Sample:
    """One element of an instant vector (``labels`` includes ``__name__`` when present)."""

    labels: Mapping[str, str]
    value: float
    key: Labels | None = None  # labels_key(labels), when at hand


class VectorSample(Protocol):
    """What the rules read of a query result's element: `Sample`, or the engine's own sample
    handed over as it is (issue #8: no copy per element per cycle). Never changed by a rule."""

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def value(self) -> float: ...

    @property
    def key(self) -> Labels | None:
        """labels_key(labels) or None; the engine's samples carry it (sorted, no empties)."""


@dataclass(slots=True)
class OutputSample:
    """A sample a rule writes: a recording rule's result, ALERTS or ALERTS_FOR_STATE.

    Never changed once made. Not a frozen dataclass only because a frozen one takes three
    times as long to make, and an alert storm makes ~170,000 per cycle (issue #8); it was
    never hashable anyway (its labels are a dict).
    """

    labels: Mapping[str, str]  # includes __name__; never changed once made
    timestamp: float
    value: float
    key: Labels | None = None  # labels_key(labels), when the rule has it at hand


class QueryError(Exception):
    """An expression failed to evaluate (the rule's health becomes "err")."""


# An instant query at a time (Unix seconds) whose result is a vector; a scalar comes back as
# one sample without labels; anything else raises QueryError. The caller only reads it.
QueryFunc = Callable[[str, float], Awaitable[Sequence[VectorSample]]]

# Stores rule outputs (and staleness markers) as series.
AppendFunc = Callable[[list[OutputSample]], Awaitable[None]]

# Takes Alertmanager API v2 postable alerts (labels, annotations, startsAt, endsAt,
# generatorURL), as Prometheus sends them after every evaluation.
NotifyFunc = Callable[[list[dict[str, Any]]], Awaitable[None]]
