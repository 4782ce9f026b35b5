"""A server's chart history for one time range, in one JSON answer of about 1,000 points.

The storage's chart reader (collector/storage/chart.py) buckets every series the charts need
in one query, from raw data or rollups: gauges are drawn from each step's average, counters
from the increase within each step (counter resets handled as Prometheus' ``increase``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from vpsmon.collector.storage.chart import DEFAULT_POINTS, ChartReader
from vpsmon.collector.storage.query import Matcher
from vpsmon.collector.storage.store import Figure
from vpsmon.web.charts import COUNTERS, METRICS, GridSeries, build

MAX_RANGE_SECONDS = 400 * 86400
_TARGET_LABELS = {"job", "instance"}
_WANTED = Matcher("__name__", "=~", "|".join(METRICS))
# What the charts draw: a gauge's average per step, a counter's last reading and increase.
_GAUGE_FIGURES: frozenset[Figure] = frozenset(("avg",))
_COUNTER_FIGURES: frozenset[Figure] = frozenset(("last", "increase"))


def chart_figures(labels: Mapping[str, str]) -> frozenset[Figure]:
    """The figures a series' charts draw (the others are not read)."""
    return _COUNTER_FIGURES if labels.get("__name__") in COUNTERS else _GAUGE_FIGURES


def points_for(start: float, end: float, scrape_interval: float) -> int:
    """About 1,000 points, but no step shorter than a scrape interval (it would be empty)."""
    return max(1, min(DEFAULT_POINTS, math.floor((end - start) / max(scrape_interval, 1.0))))


async def history(
    reader: ChartReader, server_id: int, start: float, end: float, scrape_interval: float = 1.0
) -> dict[str, Any]:
    """``reader`` is the app's (app[CHARTS]): it knows the configured retention, so a range
    older than the raw samples are kept is read from the rollups that still hold it."""
    chart = await reader.chart(
        [_WANTED],
        start,
        end,
        server_id=server_id,
        points=points_for(start, end, scrape_interval),
        figures=chart_figures,
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
        values = b.last if counter else b.avg
        n = len(b.timestamps)
        k0 = round(b.timestamps[0] / step) - first
        if 0 <= k0 and k0 + n <= length and round(b.timestamps[-1] / step) - first == k0 + n - 1:
            # The usual case: a bucket in every step, laid on the grid in one slice.
            g.values[k0 : k0 + n] = values
            if g.increase is not None:
                g.increase[k0 + 1 : k0 + n] = b.increase[1:]
            continue
        for i, ts in enumerate(b.timestamps):
            k = round(ts / step) - first
            if 0 <= k < length:
                g.values[k] = values[i]
                # The range's first bucket lacks the growth up to its first sample.
                if g.increase is not None and i > 0:
                    g.increase[k] = b.increase[i]
    charts = build(list(grid.values()), length)
    keep = columns_to_keep(charts, length)
    if keep != list(range(length)):
        for c in charts:
            for line in c["series"]:
                line["values"] = [line["values"][i] for i in keep]
    return {
        "start": start,
        "end": end,
        "step": step,
        "resolution": chart.resolution,
        "t": [(first + i) * step for i in keep],
        "charts": charts,
    }


def columns_to_keep(charts: list[dict[str, Any]], length: int) -> list[int]:
    """Steps that hold a value, plus one empty step where the data really stops for a while.

    Samples sparser than the step (a longer scrape interval, a backfill) would otherwise be
    islands between empty steps that a chart cannot join into a line; a gap of more than
    three usual spacings (the server was down) stays visible as a break.
    """
    lines = [line["values"] for c in charts for line in c["series"]]
    columns = enumerate(zip(*lines, strict=True))
    present = [i for i, column in columns if column.count(None) < len(lines)]
    if len(present) < 2:
        return present
    spacings = sorted(b - a for a, b in zip(present, present[1:], strict=False))
    usual = spacings[len(spacings) // 2]
    keep = []
    for a, b in zip(present, present[1:], strict=False):
        keep.append(a)
        if b - a > 3 * usual:
            keep.append(a + 1)
    keep.append(present[-1])
    return keep
