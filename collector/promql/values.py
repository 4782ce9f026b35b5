"""The typed results of a PromQL query and their Prometheus HTTP API JSON form.

Timestamps are Unix seconds (floats with millisecond precision), as in the HTTP API.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal


@dataclass(slots=True)
class Sample:
    """One element of an instant vector."""

    labels: dict[str, str]
    value: float
    timestamp: float
    # The labels as the engine keys them (sorted pairs, no empty values), when at hand: the
    # rule manager keys alerts by it instead of sorting ``labels`` again (issue #8 storms).
    key: tuple[tuple[str, str], ...] | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class Series:
    """One element of a range vector (matrix): a series and its points, oldest first."""

    labels: dict[str, str]
    timestamps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def points(self) -> Iterator[tuple[float, float]]:
        return zip(self.timestamps, self.values, strict=True)


@dataclass(slots=True)
class Vector:
    samples: list[Sample] = field(default_factory=list)
    result_type: Literal["vector"] = "vector"

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"metric": s.labels, "value": [json_time(s.timestamp), format_value(s.value)]}
            for s in self.samples
        ]


@dataclass(slots=True)
class Matrix:
    series: list[Series] = field(default_factory=list)
    result_type: Literal["matrix"] = "matrix"

    def __iter__(self) -> Iterator[Series]:
        return iter(self.series)

    def __len__(self) -> int:
        return len(self.series)

    def __getitem__(self, index: int) -> Series:
        return self.series[index]

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "metric": s.labels,
                "values": [[json_time(t), format_value(v)] for t, v in s.points()],
            }
            for s in self.series
        ]


@dataclass(slots=True)
class Scalar:
    value: float
    timestamp: float
    result_type: Literal["scalar"] = "scalar"

    def to_json(self) -> list[Any]:
        return [json_time(self.timestamp), format_value(self.value)]


@dataclass(slots=True)
class String:
    value: str
    timestamp: float
    result_type: Literal["string"] = "string"

    def to_json(self) -> list[Any]:
        return [json_time(self.timestamp), self.value]


Value = Vector | Matrix | Scalar | String


def result_json(value: Value) -> dict[str, Any]:
    """The ``data`` member of a /api/v1/query(_range) success answer."""
    return {"resultType": value.result_type, "result": value.to_json()}


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: Go's strconv.FormatFloat(v, 'f', -1, 64)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


def json_time(seconds: float) -> float | int:
    """Seconds with at most three decimals; whole seconds as an integer, like Prometheus."""
    millis = round(seconds * 1000)
    return millis // 1000 if millis % 1000 == 0 else millis / 1000
