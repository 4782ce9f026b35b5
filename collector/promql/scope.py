"""A `SampleSource` that only shows the series of some servers (per-user access, issue #5/#8).

Series carry the id of the server they were scraped from (`series.server_id`). A viewer's
PromQL, series, labels and label-values requests go through this wrapper with the ids of the
servers granted to them, so a query can neither return nor aggregate over, nor reveal the
label names or values of, another tenant's series. Series without a server (imported without
one) are visible only to users who see every server, who are not wrapped at all.

The wrapper asks the reader which stored series match (with their server) and keeps only the
answers whose label sets belong to visible servers; series the reader serves only from the
head, not yet in the database, stay hidden until written (a second or so): safe by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from vpsmon.collector.storage.query import Matcher, SampleSource, SeriesSamples

LabelKey = tuple[tuple[str, str], ...]


class SeriesInfo(Protocol):
    @property
    def server_id(self) -> int | None: ...

    @property
    def labels(self) -> dict[str, str]: ...


class SeriesFinder(SampleSource, Protocol):
    async def find_series(self, matchers: Sequence[Matcher]) -> Sequence[SeriesInfo]: ...


def _key(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


class ServerScopedSource:
    def __init__(self, inner: SeriesFinder, server_ids: frozenset[int]) -> None:
        self.inner = inner
        self.server_ids = server_ids

    async def _allowed(self, matchers: Sequence[Matcher]) -> set[LabelKey]:
        if not self.server_ids:
            return set()
        found = await self.inner.find_series(matchers)
        return {_key(s.labels) for s in found if s.server_id in self.server_ids}

    async def select(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[SeriesSamples]:
        allowed = await self._allowed(matchers)
        if not allowed:
            return []
        return [
            s for s in await self.inner.select(matchers, start, end) if _key(s.labels) in allowed
        ]

    async def series(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[dict[str, str]]:
        allowed = await self._allowed(matchers)
        if not allowed:
            return []
        return [s for s in await self.inner.series(matchers, start, end) if _key(s) in allowed]

    async def label_names(self, matchers: Sequence[Matcher], start: float, end: float) -> list[str]:
        names: set[str] = set()
        for labels in await self.series(matchers, start, end):
            names.update(k for k, v in labels.items() if v != "")
        return sorted(names)

    async def label_values(
        self, name: str, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[str]:
        values = {s.get(name, "") for s in await self.series(matchers, start, end)}
        values.discard("")
        return sorted(values)
