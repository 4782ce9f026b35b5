"""The chart reader: series over a range at about 1,000 points, from raw data or rollups.

A chart of a week does not need 40,000 raw samples per series: it needs one point per pixel
column, with the minimum and maximum so that spikes stay visible. The step is chosen from a
list of round durations so points land on clock-aligned buckets, and the store picks the
coarsest resolution (raw, 1 minute, 1 hour) that is still finer than the step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vpsmon.collector.storage import store
from vpsmon.collector.storage.maintenance import Retention
from vpsmon.collector.storage.query import Matcher
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.collector.storage.store import FIGURES, Buckets, Figure, Resolution, RollupCache

# Round steps, in seconds: a chart's buckets align to the clock (…:00, …:15, midnight UTC).
NICE_STEPS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800,
)  # fmt: skip
DEFAULT_POINTS = 1000
MAX_POINTS = 10_000
RESOLUTION_SECONDS: dict[Resolution, float] = {"raw": 0.0, "1m": 60.0, "1h": 3600.0}


def choose_resolution(
    step: float, start: float, now: float, retention: Retention
) -> tuple[Resolution, float]:
    """The coarsest resolution finer than ``step`` that still holds ``start``, and the step
    to use with it (never finer than the resolution)."""
    resolution: Resolution = "1h" if step >= 3600 else "1m" if step >= 60 else "raw"
    if resolution == "raw" and start < now - retention.raw:
        resolution = "1m"
    if resolution == "1m" and start < now - retention.rollup_1m:
        resolution = "1h"
    return resolution, max(step, RESOLUTION_SECONDS[resolution])


def choose_step(start: float, end: float, points: int = DEFAULT_POINTS) -> float:
    """The smallest round step that gives at most ``points`` buckets over ``[start, end]``."""
    if end < start:
        raise ValueError("end is before start")
    if not 1 <= points <= MAX_POINTS:
        raise ValueError(f"points must be between 1 and {MAX_POINTS}")
    wanted = (end - start) / points
    for step in NICE_STEPS:
        if step >= wanted:
            return float(step)
    return float(math.ceil(wanted / 86400) * 86400)


@dataclass(slots=True)
class ChartSeries:
    labels: dict[str, str]  # including __name__
    buckets: Buckets


@dataclass(slots=True)
class Chart:
    start: float
    end: float
    step: float
    resolution: Resolution  # what the buckets were computed from (where it was complete)
    series: list[ChartSeries] = field(default_factory=list)


@dataclass
class ChartReader:
    reader: StorageReader
    retention: Retention = field(default_factory=Retention)
    # Whole rollup rows of closed hours, folded (the web app's reader keeps one).
    cache: RollupCache | None = None

    async def chart(
        self,
        matchers: Sequence[Matcher],
        start: float,
        end: float,
        *,
        server_id: int | None = None,
        points: int = DEFAULT_POINTS,
        now: float | None = None,
        figures: Callable[[Mapping[str, str]], frozenset[Figure]] | None = None,
    ) -> Chart:
        """Series matching ``matchers`` (on one server if ``server_id``) in buckets.

        ``figures`` says from a series' labels which of `Buckets`' figures it needs (all
        when not given); the others stay empty and are not read from the database.
        """
        now = time.time() if now is None else now
        resolution, step = choose_resolution(
            choose_step(start, end, points), start, now, self.retention
        )
        refs = await self.reader.find_series(matchers, server_id=server_id)
        # The head answers the newest whole buckets: samples scraped but not yet written
        # (the writer flushes about once a second, later while the database is away).
        recent = self.reader.recent
        since = recent.covered_from() if recent is not None else None
        split: float | None = None
        if recent is not None and since is not None:
            split = max(start, math.ceil(since / step) * step)
            if split > end:
                split = None
            else:
                known = {_key(r.labels) for r in refs}
                for ref in recent.series_refs(matchers, split, end, server_id=server_id):
                    if _key(ref.labels) not in known:
                        refs.append(ref)
        ids = [r.id for r in refs if r.id >= 0]
        wanted = None if figures is None else {r.id: figures(r.labels) for r in refs}
        found: dict[int, Buckets] = {}
        # Times are milliseconds: the database answers up to the last one before the split.
        db_end = end if split is None else split - 0.001
        if ids and db_end >= start:
            async with self.reader.pool.acquire() as conn:
                found = await store.fetch_buckets(
                    conn, ids, start, db_end, step, resolution, wanted, self.cache
                )
        chart = Chart(start, end, step, resolution)
        for ref in refs:
            buckets = found.get(ref.id)
            if recent is not None and since is not None and split is not None:
                # From the window's start: the sample before the split gives its increase.
                ts, vs = recent.samples(ref, since, end)
                want = FIGURES if wanted is None else wanted[ref.id]
                buckets = _append_buckets(buckets, ts, vs, split, step, want)
            if buckets is not None and buckets.timestamps:
                chart.series.append(ChartSeries(dict(ref.labels), buckets))
        chart.series.sort(key=lambda s: sorted(s.labels.items()))
        return chart


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _append_buckets(
    buckets: Buckets | None,
    ts: list[float],
    vs: list[float],
    split: float,
    step: float,
    want: frozenset[Figure] = FIGURES,
) -> Buckets | None:
    """Add buckets of ``step`` made of the samples at or after ``split`` (earlier samples
    only give the first counter increase), as store.fetch_buckets makes them: NaNs (stale
    markers) left out, a counter that drops counted as restarted from zero; only the
    figures in ``want``."""
    out = buckets if buckets is not None else Buckets()
    # The newest stored value before the split, unless the window holds a later one.
    previous: float | None = out.last[-1] if out.last else None
    current: float | None = None
    acc: list[float] = []  # min, max, sum, count, last, increase
    for t, v in zip(ts, vs, strict=True):
        if v != v:
            continue
        delta = 0.0 if previous is None else (v if v < previous else v - previous)
        previous = v
        if t < split:
            continue
        b = math.floor(t / step) * step
        if b != current:
            if current is not None:
                _push(out, current, acc, want)
            current, acc = b, [v, v, 0.0, 0.0, v, 0.0]
        acc[0] = min(acc[0], v)
        acc[1] = max(acc[1], v)
        acc[2] += v
        acc[3] += 1
        acc[4] = v
        acc[5] += delta
    if current is not None:
        _push(out, current, acc, want)
    return out if out.timestamps else buckets


def _push(out: Buckets, b: float, acc: list[float], want: frozenset[Figure]) -> None:
    out.timestamps.append(b)
    if "min" in want:
        out.min.append(acc[0])
    if "max" in want:
        out.max.append(acc[1])
    if "avg" in want:
        out.avg.append(acc[2] / acc[3])
    if "last" in want:
        out.last.append(acc[4])
    if "increase" in want:
        out.increase.append(acc[5])
