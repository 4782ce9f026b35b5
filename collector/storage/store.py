"""The one module that knows how samples sit in the tables (docs/storage.md).

Readers call these functions with series ids and a time range; the layout behind them (raw
time partitions, compacted chunks, rollups) can change without touching any reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

Samples = tuple[list[float], list[float]]


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def fetch_samples(
    conn: asyncpg.Connection,
    ids: list[int],
    start: float,
    end: float,
    *,
    end_inclusive: bool = True,
) -> dict[int, Samples]:
    """{series id: (timestamps, values)} in ``[start, end]`` (or ``[start, end)``)."""
    rows = await conn.fetch(
        "SELECT series_id, array_agg(extract(epoch FROM ts)::float8 ORDER BY ts) AS t,"
        " array_agg(value ORDER BY ts) AS v"
        " FROM samples WHERE series_id = ANY($1::bigint[]) AND ts >= $2"
        " AND (ts < $3 OR ($4 AND ts = $3))"
        " GROUP BY series_id",
        ids,
        _dt(start),
        _dt(end),
        end_inclusive,
    )
    return {r["series_id"]: (r["t"], r["v"]) for r in rows}


async def active_series(
    conn: asyncpg.Connection, ids: list[int], start: float, end: float
) -> set[int]:
    """The ids among ``ids`` with at least one sample in ``[start, end]``."""
    rows = await conn.fetch(
        "SELECT id FROM unnest($1::bigint[]) AS u(id) WHERE EXISTS ("
        " SELECT 1 FROM samples WHERE series_id = u.id AND ts >= $2 AND ts <= $3)",
        ids,
        _dt(start),
        _dt(end),
    )
    return {r["id"] for r in rows}


@dataclass(slots=True)
class Buckets:
    """One series summarised in buckets of ``step`` seconds (only buckets holding samples).

    ``increase`` is the counter increase within each bucket, counter resets handled as
    Prometheus' ``increase`` does (a drop means the counter restarted from zero); it is
    meaningless for gauges. Staleness markers and other NaNs are left out of every figure.
    """

    timestamps: list[float] = field(default_factory=list)  # bucket starts
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    avg: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    increase: list[float] = field(default_factory=list)


async def fetch_buckets(
    conn: asyncpg.Connection, ids: list[int], start: float, end: float, step: float
) -> tuple[dict[int, Buckets], str]:
    """{series id: buckets} over ``[start, end]`` and the resolution they were made from."""
    rows = await conn.fetch(
        """
        WITH s AS (
            SELECT series_id, ts, value,
                   value - lag(value) OVER (PARTITION BY series_id ORDER BY ts) AS delta
            FROM samples
            WHERE series_id = ANY($1::bigint[]) AND ts >= $2 AND ts <= $3
              AND value <> 'NaN'::float8
        )
        SELECT series_id,
               floor(extract(epoch FROM ts)::float8 / $4) * $4 AS b,
               min(value) AS mn, max(value) AS mx, avg(value) AS av,
               (array_agg(value ORDER BY ts DESC))[1] AS lst,
               coalesce(sum(CASE WHEN delta < 0 THEN value ELSE delta END), 0) AS inc
        FROM s GROUP BY series_id, b ORDER BY series_id, b
        """,
        ids,
        _dt(start),
        _dt(end),
        float(step),
    )
    out: dict[int, Buckets] = {}
    for r in rows:
        b = out.get(r["series_id"])
        if b is None:
            b = out[r["series_id"]] = Buckets()
        b.timestamps.append(r["b"])
        b.min.append(r["mn"])
        b.max.append(r["mx"])
        b.avg.append(r["av"])
        b.last.append(r["lst"])
        b.increase.append(r["inc"])
    return out, "raw"
