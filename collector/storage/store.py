"""The one module that knows how samples sit in the tables (docs/storage.md).

Readers call these functions with series ids and a time range; the layout behind them (raw
time partitions, compacted chunks, rollups) can change without touching any reader.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import asyncpg

Samples = tuple[list[float], list[float]]
Resolution = Literal["raw", "1m", "1h"]
HOUR = 3600


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
    """{series id: (timestamps, values)} in ``[start, end]`` (or ``[start, end)``).

    Raw rows (hourly partitions and the default partition) and compacted chunks are read
    together; a sample present in both (a late duplicate not yet merged) comes back once.
    """
    raw = await conn.fetch(
        "SELECT series_id, array_agg(ms ORDER BY ms) AS t, array_agg(value ORDER BY ms) AS v"
        " FROM (SELECT series_id, round(extract(epoch FROM ts) * 1000)::bigint AS ms, value"
        "       FROM samples WHERE series_id = ANY($1::bigint[]) AND ts >= $2"
        "       AND (ts < $3 OR ($4 AND ts = $3))) x"
        " GROUP BY series_id",
        ids,
        _dt(start),
        _dt(end),
        end_inclusive,
    )
    chunks = await conn.fetch(
        "SELECT series_id, first_ms, deltas, vals FROM sample_chunks"
        " WHERE series_id = ANY($1::bigint[]) AND block_start > $2 AND block_start <= $3"
        " AND last_ms >= $4 AND first_ms <= $5 ORDER BY series_id, block_start",
        ids,
        _dt(start - HOUR),
        _dt(end),
        math.floor(start * 1000),
        math.ceil(end * 1000),
    )
    lo, hi = start * 1000, end * 1000
    pieces: dict[int, list[tuple[list[int], list[float]]]] = {}
    for c in chunks:
        ts = list(itertools.accumulate(c["deltas"], initial=c["first_ms"]))[1:]
        vs: list[float] = c["vals"]
        i = bisect.bisect_left(ts, lo)
        j = bisect.bisect_right(ts, hi) if end_inclusive else bisect.bisect_left(ts, hi)
        if i < j:
            pieces.setdefault(c["series_id"], []).append((ts[i:j], vs[i:j]))
    for r in raw:
        pieces.setdefault(r["series_id"], []).append((r["t"], r["v"]))
    out = {}
    for series_id, parts in pieces.items():
        ts_ms, values = _merge(parts)
        out[series_id] = ([t / 1000 for t in ts_ms], values)
    return out


def _merge(parts: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float]]:
    """Join pieces of one series; chunks come first in ``parts`` and win over raw duplicates."""
    if len(parts) == 1:
        return parts[0]
    ordered = sorted(parts, key=lambda p: p[0][0])
    if all(a[0][-1] < b[0][0] for a, b in itertools.pairwise(ordered)):
        ts: list[int] = []
        vs: list[float] = []
        for t, v in ordered:
            ts.extend(t)
            vs.extend(v)
        return ts, vs
    merged: dict[int, float] = {}
    for t, v in parts:
        for key, value in zip(t, v, strict=True):
            merged.setdefault(key, value)
    keys = sorted(merged)
    return keys, [merged[k] for k in keys]


async def active_series(
    conn: asyncpg.Connection, ids: list[int], start: float, end: float
) -> set[int]:
    """The ids among ``ids`` with samples in ``[start, end]``."""
    rows = await conn.fetch(
        "SELECT id FROM unnest($1::bigint[]) AS u(id) WHERE EXISTS ("
        "  SELECT 1 FROM samples WHERE series_id = u.id AND ts >= $2 AND ts <= $3)"
        " OR EXISTS (SELECT 1 FROM sample_chunks c WHERE c.series_id = u.id"
        "  AND c.block_start > $4 AND c.block_start <= $3"
        "  AND c.last_ms >= $5 AND c.first_ms <= $6)",
        ids,
        _dt(start),
        _dt(end),
        _dt(start - HOUR),
        math.floor(start * 1000),
        math.ceil(end * 1000),
    )
    return {r["id"] for r in rows}


async def marks(conn: asyncpg.Connection) -> tuple[float, float]:
    """(compacted_until, daily_until): before them, rollup_1m and rollup_1h are complete."""
    rows = await conn.fetch("SELECT name, value FROM storage_state")
    found = {r["name"]: r["value"].timestamp() for r in rows}
    compacted = found.get("compacted_until", 0.0)
    return compacted, min(found.get("daily_until", 0.0), compacted)


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


# Buckets from partial aggregates: raw samples (one partial each, with its counter increase
# since the previous sample), 1-minute and 1-hour rollup entries. Each source answers its own
# time range ($5…$10), so every instant is counted once.
_BUCKETS = """
WITH pts AS (
    SELECT series_id, round(extract(epoch FROM ts) * 1000)::bigint AS ms, value
    FROM samples
    WHERE series_id = ANY($1::bigint[])
      AND ts >= to_timestamp($5::float8) AND ts <= to_timestamp($3::float8)
    UNION
    SELECT series_id, ms, value FROM (
        SELECT c.series_id, c.block_start,
               c.first_ms + sum(u.d) OVER (PARTITION BY c.series_id, c.block_start ORDER BY u.o)
                   AS ms,
               u.v AS value
        FROM sample_chunks c, unnest(c.deltas, c.vals) WITH ORDINALITY AS u(d, v, o)
        WHERE c.series_id = ANY($1::bigint[])
          AND c.block_start > to_timestamp($5::float8 - 3600)
          AND c.block_start <= to_timestamp($3::float8)
          AND c.last_ms >= $5::float8 * 1000 AND c.first_ms <= $3::float8 * 1000
    ) c
    WHERE ms >= $5::float8 * 1000 AND ms <= $3::float8 * 1000
), raw AS (
    SELECT series_id, ms, value,
           value - lag(value) OVER (PARTITION BY series_id ORDER BY ms) AS delta
    FROM pts WHERE value <> 'NaN'::float8
), partials AS (
    SELECT series_id, ms / 1000.0::float8 AS t, value AS mn, value AS mx, value AS sm,
           1::bigint AS cnt, value AS lst,
           CASE WHEN delta < 0 THEN value ELSE coalesce(delta, 0) END AS inc
    FROM raw WHERE ms >= $6::float8 * 1000
    UNION ALL
    SELECT series_id, t, mn, mx, sm, cnt, lst, inc FROM (
        SELECT r.series_id, extract(epoch FROM r.block_start)::float8 + u.s * 60 AS t,
               u.mn, u.mx, u.sm, u.cnt::bigint AS cnt, u.lst, u.inc
        FROM rollup_1m r,
             unnest(r.slots, r.mins, r.maxs, r.sums, r.counts, r.lasts, r.incs)
                 AS u(s, mn, mx, sm, cnt, lst, inc)
        WHERE r.series_id = ANY($1::bigint[])
          AND r.block_start > to_timestamp($7::float8 - 3600)
          AND r.block_start < to_timestamp($8::float8)
    ) m WHERE t >= $7::float8 AND t < $8::float8
    UNION ALL
    SELECT series_id, t, mn, mx, sm, cnt, lst, inc FROM (
        SELECT r.series_id, extract(epoch FROM r.day)::float8 + u.s * 3600 AS t,
               u.mn, u.mx, u.sm, u.cnt::bigint AS cnt, u.lst, u.inc
        FROM rollup_1h r,
             unnest(r.slots, r.mins, r.maxs, r.sums, r.counts, r.lasts, r.incs)
                 AS u(s, mn, mx, sm, cnt, lst, inc)
        WHERE r.series_id = ANY($1::bigint[])
          AND r.day > to_timestamp($9::float8 - 86400) AND r.day < to_timestamp($10::float8)
    ) h WHERE t >= $9::float8 AND t < $10::float8
)
SELECT series_id, floor(t / $4::float8) * $4::float8 AS b,
       min(mn) AS mn, max(mx) AS mx, sum(sm) / sum(cnt) AS av,
       (array_agg(lst ORDER BY t DESC))[1] AS lst, sum(inc) AS inc
FROM partials WHERE t >= $2::float8 AND t <= $3::float8
GROUP BY series_id, b ORDER BY series_id, b
"""


async def fetch_buckets(
    conn: asyncpg.Connection,
    ids: list[int],
    start: float,
    end: float,
    step: float,
    resolution: Resolution = "raw",
) -> dict[int, Buckets]:
    """{series id: buckets} over ``[start, end]``, from ``resolution`` where it is complete.

    With "1h", hours of days not yet rolled up come from "1m"; with "1m", minutes of hours
    not yet compacted come from raw samples. The step should be a multiple of the resolution.
    """
    compacted, daily = await marks(conn)
    never = end + 1  # an empty range for a source that is not used
    h_from, h_to = (start, min(end, daily)) if resolution == "1h" else (never, never)
    m_from = max(start, h_to) if resolution == "1h" else start
    m_from, m_to = (m_from, min(end, compacted)) if resolution != "raw" else (never, never)
    raw_from = max(start, m_to) if resolution != "raw" else start
    # Five minutes of samples before the raw range give its first counter increase.
    rows = await conn.fetch(
        _BUCKETS,
        ids,
        start,
        end,
        float(step),
        raw_from - 300,
        raw_from,
        m_from,
        m_to,
        h_from,
        h_to,
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
    return out
