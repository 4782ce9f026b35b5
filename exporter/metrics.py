"""The exporter's in-memory metric model: families of samples, as the exposition format has them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MetricType = Literal["counter", "gauge", "untyped"]
Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class MetricFamily:
    """One metric name with its HELP, TYPE and samples.

    For counters, `name` is the full sample name including `_total` (as node_exporter
    writes it in the text format), e.g. `node_cpu_seconds_total`.
    """

    name: str
    type: MetricType
    help: str
    label_names: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, value: float, *label_values: str) -> None:
        if len(label_values) != len(self.label_names):
            raise ValueError(
                f"{self.name}: expected {len(self.label_names)} label values,"
                f" got {len(label_values)}"
            )
        self.samples.append((label_values, float(value)))


def counter(name: str, help: str, *label_names: str) -> MetricFamily:
    return MetricFamily(name, "counter", help, tuple(label_names))


def gauge(name: str, help: str, *label_names: str) -> MetricFamily:
    return MetricFamily(name, "gauge", help, tuple(label_names))
