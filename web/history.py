"""A server's chart history for one time range, in one JSON answer of about 1,000 points.

The storage's chart reader (collector/storage/chart.py) buckets every series the charts need
in one query, from raw data or rollups: gauges are drawn from each step's average, counters
from the increase within each step (counter resets handled as Prometheus' ``increase``).
"""

from __future__ import annotations

import math
from typing import Any

import asyncpg

from vpsmon.collector.storage.chart import DEFAULT_POINTS, ChartReader
from vpsmon.collector.storage.query import Matcher
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.web.charts import COUNTERS, METRICS, GridSeries, build

MAX_RANGE_SECONDS = 400 * 86400
_TARGET_LABELS = {"job", "instance"}
_WANTED = Matcher("__name__", "=~", "|".join(METRICS))


def points_for(start: float, end: float, scrape_interval: float) -> int:
    """About 1,000 points, but no step shorter than a scrape interval (it would be empty)."""
    return max(1, min(DEFAULT_POINTS, math.floor((end - start) / max(scrape_interval, 1.0))))


async def history(
    pool: asyncpg.Pool, server_id: int, start: float, end: float, scrape_interval: float = 1.0
) -> dict[str, Any]:
    reader = ChartReader(StorageReader(pool))
    chart = await reader.chart(
        [_WANTED], start, end, server_id=server_id, points=points_for(start, end, scrape_interval)
    )
    step = chart.step
    first = math.floor(start / step)
    length = math.floor(end / step) - first + 1
    # A server's series are one line per identity without job/instance: after its address
    # changed, the old and the new series continue each other.
    grid: dict[tuple[str, tuple[tuple[str, str], ...]], GridSeries] = {}
    for series in chart.series:
        labels = {k: v for k, v in series.labels.items() if k not in _TARGET_LABELS}
        metric = labels.pop("__name__", "")
        counter = metric in COUNTERS
        key = (metric, tuple(sorted(labels.items())))
        g = grid.get(key)
        if g is None:
            g = grid[key] = GridSeries(
                metric,
                labels,
                [None] * length,
                [None] * length,
                [None] * length if counter else None,
                step,
            )
        b = series.buckets
        for i, ts in enumerate(b.timestamps):
            k = round(ts / step) - first
            if 0 <= k < length:
                g.values[k] = b.last[i] if counter else b.avg[i]
                # The range's first bucket lacks the growth up to its first sample.
                if g.increase is not None and i > 0:
                    g.increase[k] = b.increase[i]
    return {
        "start": start,
        "end": end,
        "step": step,
        "resolution": chart.resolution,
        "t": [(first + i) * step for i in range(length)],
        "charts": build(list(grid.values()), length),
    }
