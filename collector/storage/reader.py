"""`SampleSource` over the database (and the head's recent window): what PromQL, rules, the
Prometheus API and the dashboards read through.

Series are found in the `series` table: label matchers that an index can answer (equality,
alternations of literals, the metric name) become SQL; every matcher is then applied again
in Python with Prometheus' exact semantics (`Matcher.matches`), so SQL only ever narrows.
Samples come from `store` (which knows the table layout: raw partitions, compressed chunks,
rollups), so this module never changes when the layout does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import asyncpg

from vpsmon.collector.storage import store
from vpsmon.collector.storage.query import Matcher, RangeBlock, SeriesSamples

# A regular expression that is only literals joined by "|" can be an `= ANY(…)` in SQL.
_LITERAL_ALTERNATION = re.compile(r"[A-Za-z0-9_:./ -]+(?:\|[A-Za-z0-9_:./ -]+)*")


@dataclass(frozen=True, slots=True)
class SeriesRef:
    id: int
    server_id: int | None
    labels: dict[str, str]  # including __name__


class RecentWindow(Protocol):
    """The head's in-memory window: recent samples served without the database."""

    def covered_from(self) -> float | None:
        """Every sample at or after this time is in the window (None: nothing is)."""
        ...

    def samples(
        self, series: SeriesRef, start: float, end: float
    ) -> tuple[list[float], list[float]]:
        """The series' samples in ``[start, end]`` from the window, oldest first."""
        ...

    def series_refs(
        self,
        matchers: Sequence[Matcher],
        start: float,
        end: float,
        *,
        server_id: int | None = None,
    ) -> list[SeriesRef]:
        """Series in the window matching ``matchers`` with samples in the range (of one
        server when ``server_id`` is given).

        Refs of series not yet in the database have ``id`` < 0.
        """
        ...


@runtime_checkable
class RecentSelect(Protocol):
    """A window that can also answer a whole selection in one pass (collector/head.py)."""

    def select(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[tuple[tuple[tuple[str, str], ...] | None, dict[str, str], list[float], list[float]]]:
        """(sorted label set or None if a value is empty, labels, timestamps, values) of the
        matching series in range, in label-set order; the labels are not to be changed."""
        ...


@runtime_checkable
class RecentBlock(Protocol):
    """A window that can give a selection as a `RangeBlock` (collector/head.py)."""

    def select_block(self, matchers: Sequence[Matcher], start: float, end: float) -> RangeBlock:
        """Every matching series (even with no sample in range) as a row, in label-set order."""
        ...


def _sql_filter(matchers: Sequence[Matcher]) -> tuple[str, list[Any]]:
    """A WHERE clause that narrows the series table; Python applies the matchers exactly."""
    clauses: list[str] = []
    args: list[Any] = []
    contains: dict[str, str] = {}
    for m in matchers:
        if m.name == "__name__":
            if m.op == "=":
                args.append(m.value)
                clauses.append(f"metric = ${len(args)}")
            elif m.op == "=~" and _LITERAL_ALTERNATION.fullmatch(m.value):
                args.append(m.value.split("|"))
                clauses.append(f"metric = ANY(${len(args)}::text[])")
        elif m.op == "=" and m.value:
            contains[m.name] = m.value
        elif m.op == "=~" and _LITERAL_ALTERNATION.fullmatch(m.value):
            args.append(m.name)
            args.append(m.value.split("|"))
            clauses.append(f"labels->>${len(args) - 1} = ANY(${len(args)}::text[])")
    if contains:
        # jsonb containment is what the GIN index on labels answers.
        args.append(json.dumps(contains))
        clauses.append(f"labels @> ${len(args)}::jsonb")
    return (" AND ".join(clauses) or "true"), args


@dataclass
class StorageReader:
    """Reads series and samples; ``recent`` (the head) answers the newest part of a range."""

    pool: asyncpg.Pool
    recent: RecentWindow | None = None
    # Most series one selector may touch; a selector matching more is refused, not run.
    max_series: int = 200_000

    async def find_series(
        self, matchers: Sequence[Matcher], *, server_id: int | None = None
    ) -> list[SeriesRef]:
        """Every stored series matching all matchers (whatever their samples)."""
        where, args = _sql_filter(matchers)
        if server_id is not None:
            args.append(server_id)
            where += f" AND server_id = ${len(args)}"
        query = f"SELECT id, server_id, metric, labels::text AS labels FROM series WHERE {where}"  # noqa: S608 — only placeholders
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(query + f" LIMIT {self.max_series + 1}", *args)
        if len(rows) > self.max_series:
            raise ValueError(
                f"the selector matches more than {self.max_series} series; add matchers"
            )
        out = []
        for row in rows:
            labels = json.loads(row["labels"])
            labels["__name__"] = row["metric"]
            if all(m.matches(labels) for m in matchers):
                out.append(SeriesRef(row["id"], row["server_id"], labels))
        return out

    def _split(self, start: float, end: float) -> float | None:
        """The time from which the head answers, if it covers part of [start, end]."""
        if self.recent is None:
            return None
        since = self.recent.covered_from()
        if since is None or since > end:
            return None
        return max(since, start)

    async def _with_recent(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> tuple[list[SeriesRef], float | None]:
        """Matching series and the time from which the head answers (None: it does not).

        When the head holds the whole range, the database is not asked at all.
        """
        split = self._split(start, end)
        if split is not None and split <= start and self.recent is not None:
            return self.recent.series_refs(matchers, start, end), start
        refs = await self.find_series(matchers)
        if split is not None and self.recent is not None:
            known = {_key(r.labels) for r in refs}
            for ref in self.recent.series_refs(matchers, split, end):
                if _key(ref.labels) not in known:
                    refs.append(ref)
        return refs, split

    async def select(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[SeriesSamples]:
        split = self._split(start, end)
        if split is not None and split <= start and isinstance(self.recent, RecentSelect):
            # The head holds the whole range (rules, recent queries): one pass over it.
            # In label-set order already; the labels are the head's (the engine only reads them).
            return [
                SeriesSamples(labels, ts, vs, key)
                for key, labels, ts, vs in self.recent.select(matchers, start, end)
            ]
        refs, split = await self._with_recent(matchers, start, end)
        db_end = end if split is None else split
        stored: dict[int, tuple[list[float], list[float]]] = {}
        ids = [r.id for r in refs if r.id >= 0]
        if ids and (split is None or split > start):
            async with self.pool.acquire() as conn:
                stored = await store.fetch_samples(
                    conn, ids, start, db_end, end_inclusive=split is None
                )
        out = []
        for ref in refs:
            ts, vs = stored.get(ref.id, ([], []))
            if split is not None and self.recent is not None:
                rts, rvs = self.recent.samples(ref, split, end)
                if rts:
                    ts, vs = ts + rts, vs + rvs
            if ts:
                out.append(SeriesSamples(dict(ref.labels), ts, vs))
        out.sort(key=lambda s: sorted(s.labels.items()))
        return out

    def select_block(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> RangeBlock | None:
        """The selection as a `RangeBlock` from the head when the head holds the whole range
        (the condition under which `select` answers from it alone), else None: the caller then
        takes `select` (issue #8's columnar rule path)."""
        split = self._split(start, end)
        if split is not None and split <= start and isinstance(self.recent, RecentBlock):
            return self.recent.select_block(matchers, start, end)
        return None

    async def _active(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[dict[str, str]]:
        refs, split = await self._with_recent(matchers, start, end)
        ids = [r.id for r in refs if r.id >= 0]
        active: set[int] = set()
        if ids:
            async with self.pool.acquire() as conn:
                active = await store.active_series(conn, ids, start, end)
        out = []
        for ref in refs:
            if ref.id in active:
                out.append(ref.labels)
            elif split is not None and self.recent is not None:
                if self.recent.samples(ref, split, end)[0]:
                    out.append(ref.labels)
        return out

    async def series(
        self, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[dict[str, str]]:
        found = await self._active(matchers, start, end)
        return sorted((dict(s) for s in found), key=lambda s: sorted(s.items()))

    async def label_names(self, matchers: Sequence[Matcher], start: float, end: float) -> list[str]:
        if not matchers and self._split(start, end) != start:
            # Grafana asks this without a selector: answer from the index, not series by series
            # (like Prometheus' block index, a series counts whatever its samples' times).
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT DISTINCT jsonb_object_keys(labels) AS k FROM series"
                )
            return sorted({"__name__", *(r["k"] for r in rows)})
        names: set[str] = set()
        for labels in await self._active(matchers, start, end):
            names.update(k for k, v in labels.items() if v != "")
        return sorted(names)

    async def label_values(
        self, name: str, matchers: Sequence[Matcher], start: float, end: float
    ) -> list[str]:
        if not matchers and self._split(start, end) != start:
            async with self.pool.acquire() as conn:
                if name == "__name__":
                    rows = await conn.fetch("SELECT DISTINCT metric AS v FROM series")
                else:
                    rows = await conn.fetch(
                        "SELECT DISTINCT labels->>$1 AS v FROM series WHERE labels ? $1", name
                    )
            return sorted(r["v"] for r in rows if r["v"])
        values: set[str] = set()
        for labels in await self._active(matchers, start, end):
            value = labels.get(name, "")
            if value != "":
                values.add(value)
        return sorted(values)


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))
