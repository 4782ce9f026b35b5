"""Recording rules: the expression's result stored under a new metric name (rules/recording.go)."""

from __future__ import annotations

from collections.abc import Mapping

from vpsmon.collector.rules.alerting import RuleHealth
from vpsmon.collector.rules.model import Labels, OutputSample, QueryError, QueryFunc, labels_key
from vpsmon.collector.rules.rulefile import RuleSpec


class RecordingRule:
    kind = "recording"

    def __init__(self, spec: RuleSpec, group_labels: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.expr = spec.expr
        self.labels: dict[str, str] = {**(group_labels or {}), **spec.labels}
        self.health = RuleHealth()

    @property
    def identity(self) -> tuple[str, Labels]:
        return (self.name, labels_key(self.labels))

    async def evaluate(
        self, ts: float, query: QueryFunc, limit: int = 0, query_time: float | None = None
    ) -> list[OutputSample]:
        at = ts if query_time is None else query_time
        result = await query(self.expr, at)
        out: list[OutputSample] = []
        seen: set[Labels] = set()
        for sample in result:
            labels = {**sample.labels, "__name__": self.name, **self.labels}
            labels = {k: v for k, v in labels.items() if v}  # empty removes, as in Prometheus
            key = labels_key(labels)
            if key in seen:
                raise QueryError(
                    "vector contains metrics with the same labelset after applying rule labels"
                )
            seen.add(key)
            out.append(OutputSample(labels, at, sample.value, key))
        if limit > 0 and len(out) > limit:
            raise QueryError(f"exceeded limit of {limit} with {len(out)} series")
        return out
