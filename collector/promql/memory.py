"""An in-memory `SampleSource`: for unit tests, rule unit tests and small imports.

Series are keyed by their label set; samples are kept sorted by time. It follows the contract
in collector/storage/query.py exactly (matching, range filtering, sorted answers), so code
tested against it behaves the same over the real storage.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping, Sequence

from vpsmon.collector.storage.query import Matcher, SeriesSamples


class MemorySource:
    def __init__(self) -> None:
        self._series: dict[tuple[tuple[str, str], ...], tuple[list[float], list[float]]] = {}

    def add(self, labels: Mapping[str, str], timestamp: float, value: float) -> None:
        """Add one sample (seconds); a sample at an existing timestamp replaces it."""
        key = tuple(sorted((k, v) for k, v in labels.items() if v != ""))
        ts, vs = self._series.setdefault(key, ([], []))
        if not ts or timestamp > ts[-1]:
            ts.append(timestamp)
            vs.append(value)
            return
        i = bisect_left(ts, timestamp)
        if i < len(ts) and ts[i] == timestamp:
            vs[i] = value
            return
        insort(ts, timestamp)
        vs.insert(i, value)

    def add_series(self, labels: Mapping[str, str], points: Sequence[tuple[float, float]]) -> None:
        for t, v in points:
            self.add(labels, t, v)

    def _matching(
        self, matchers: Sequence[Matcher]
    ) -> list[tuple[dict[str, str], list[float], list[float]]]:
        out = []
        for key in sorted(self._series):
            labels = dict(key)
            if all(m.matches(labels) for m in matchers):
                ts, vs = self._series[key]
                out.append((labels, ts, vs))
        return out

    async def select(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[SeriesSamples]:
        out = []
        for labels, ts, vs in self._matching(matchers):
            lo, hi = bisect_left(ts, start), bisect_right(ts, end)
            if lo < hi:
                out.append(SeriesSamples(labels, ts[lo:hi], vs[lo:hi]))
        return out

    async def series(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[dict[str, str]]:
        return [s.labels for s in await self.select(matchers, start, end)]

    async def label_names(self, matchers: Sequence[Matcher], start: float, end: float) -> list[str]:
        names: set[str] = set()
        for labels in await self.series(matchers, start, end):
            names.update(labels)
        return sorted(names)

    async def label_values(
        self, name: str, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[str]:
        values = {
            labels[name] for labels in await self.series(matchers, start, end) if name in labels
        }
        return sorted(values)
