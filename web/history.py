"""A server's chart history for one time range, in one JSON answer of about 1,000 points.

The storage engineer's chart reader (collector/storage/reader.py, issue #4) will choose raw or
rollup data; until it lands this reads the raw ``samples`` table with one bucketed query:
gauges averaged per step, counters' last (largest) reading per step, staleness markers
skipped.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import asyncpg

from vpsmon.web.charts import COUNTERS, METRICS, GridSeries, build

TARGET_POINTS = 1000
# Steps people read easily; the smallest that keeps a range within TARGET_POINTS wins.
NICE_STEPS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
MAX_RANGE_SECONDS = 400 * 86400


def choose_step(start: float, end: float, min_step: float = 1.0) -> int:
    span = max(end - start, 1.0)
    for step in NICE_STEPS:
        if step >= min_step and span / step <= TARGET_POINTS:
            return step
    return NICE_STEPS[-1]


async def history(
    pool: asyncpg.Pool, server_id: int, start: float, end: float, min_step: float = 1.0
) -> dict[str, Any]:
    step = choose_step(start, end, min_step)
    first = math.floor(start / step)
    last = math.floor(end / step)
    length = last - first + 1
    rows = await pool.fetch(
        """
        SELECT s.id, s.metric, s.labels,
               floor(extract(epoch FROM x.ts) / $5)::bigint AS bucket,
               CASE WHEN s.metric = ANY($6::text[]) THEN max(x.value) ELSE avg(x.value) END
                   AS value,
               max(extract(epoch FROM x.ts)) AS ts
        FROM series s JOIN samples x ON x.series_id = s.id
        WHERE s.server_id = $1 AND s.metric = ANY($2::text[])
          AND x.ts >= $3 AND x.ts <= $4 AND x.value <> 'NaN'::float8
        GROUP BY s.id, bucket
        ORDER BY s.id, bucket
        """,
        server_id,
        list(METRICS),
        datetime.fromtimestamp(start, UTC),
        datetime.fromtimestamp(end, UTC),
        step,
        list(COUNTERS),
    )
    grid: dict[int, GridSeries] = {}
    for row in rows:
        s = grid.get(row["id"])
        if s is None:
            s = grid[row["id"]] = GridSeries(
                row["metric"], json.loads(row["labels"]), [None] * length, [None] * length
            )
        i = row["bucket"] - first
        if 0 <= i < length:
            s.values[i] = row["value"]
            s.times[i] = float(row["ts"])
    # Counters need a reading on each side of a step: allow a few empty steps between them
    # (a scrape interval longer than the step).
    charts = build(list(grid.values()), length, max_gap=max(3, math.ceil(60 / step)))
    return {
        "start": start,
        "end": end,
        "step": step,
        "t": [(first + i) * step for i in range(length)],
        "charts": charts,
    }
