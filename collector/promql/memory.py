"""An in-memory `SampleSource`: for unit tests, rule unit tests and small imports.

Series are keyed by their label set and indexed by metric name; samples are kept sorted by
time, with timestamps rounded to whole milliseconds as Prometheus keeps them. It follows the
contract in collector/storage/query.py exactly (matching, range filtering, sorted answers), so
code tested against it behaves the same over the real storage.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Mapping, Sequence

from vpsmon.collector.storage.query import Matcher, SeriesSamples

Key = tuple[tuple[str, str], ...]


class MemorySource:
    def __init__(self) -> None:
        self._series: dict[Key, tuple[list[float], list[float], dict[str, str]]] = {}
        self._by_name: dict[str, list[Key]] = {}
        self._sorted: dict[str, bool] = {}

    def add(self, labels: Mapping[str, str], timestamp: float, value: float) -> None:
        """Add one sample (seconds); a sample at an existing timestamp replaces it."""
        key = tuple(sorted((k, v) for k, v in labels.items() if v != ""))
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = ([], [], dict(key))
            name = found[2].get("__name__", "")
            self._by_name.setdefault(name, []).append(key)
            self._sorted[name] = False
        ts, vs, _ = found
        timestamp = round(timestamp * 1000) / 1000
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

    def _keys(self, name: str) -> list[Key]:
        keys = self._by_name.get(name, [])
        if not self._sorted.get(name, True):
            keys.sort()
            self._sorted[name] = True
        return keys

    def _candidates(self, matchers: Sequence[Matcher]) -> Iterable[Key]:
        for m in matchers:
            if m.name == "__name__" and m.op == "=":
                return self._keys(m.value)
        names = sorted(
            n
            for n in self._by_name
            if all(x.matches({"__name__": n}) for x in matchers if x.name == "__name__")
        )
        return sorted(k for n in names for k in self._keys(n))

    def _matching(
        self, matchers: Sequence[Matcher]
    ) -> list[tuple[dict[str, str], list[float], list[float]]]:
        out = []
        for key in self._candidates(matchers):
            ts, vs, labels = self._series[key]
            if all(m.matches(labels) for m in matchers):
                out.append((labels, ts, vs))
        return out

    async def select(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[SeriesSamples]:
        out = []
        for labels, ts, vs in self._matching(matchers):
            lo, hi = bisect_left(ts, start), bisect_right(ts, end)
            if lo < hi:
                out.append(SeriesSamples(dict(labels), ts[lo:hi], vs[lo:hi]))
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
