"""The one module that knows how samples sit in the tables (docs/storage.md).

Readers call these functions with series ids and a time range; the layout behind them (raw
time partitions, compacted chunks, rollups) can change without touching any reader.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
from array import array
from collections.abc import Iterator, Mapping, Sequence
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
    together; a sample present in both (a late row not yet merged) comes back once, with the
    raw row's value, as maintenance will merge it.
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
    """Join pieces of one series; raw pieces come last in ``parts`` and win over chunks."""
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
        # Raw rows come last and overwrite: a raw row of a compacted hour is the later write
        # (a rule re-evaluated), which maintenance's merge keeps too.
        merged.update(zip(t, v, strict=True))
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
    A figure the reader did not ask for (`fetch_buckets`' ``figures``) stays an empty list.
    """

    timestamps: list[float] = field(default_factory=list)  # bucket starts
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    avg: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    increase: list[float] = field(default_factory=list)


Figure = Literal["min", "max", "avg", "last", "increase"]
FIGURES: frozenset[Figure] = frozenset(("min", "max", "avg", "last", "increase"))
# The rollup arrays each figure is made of.
_ARRAYS: dict[Figure, tuple[str, ...]] = {
    "min": ("mins",),
    "max": ("maxs",),
    "avg": ("sums", "counts"),
    "last": ("lasts",),
    "increase": ("incs",),
}
_ARRAY_NAMES = ("mins", "maxs", "sums", "counts", "lasts", "incs")


# Buckets of raw samples (partitions, and compacted chunks in raw mode), each sample with its
# counter increase since the previous one. Rollups are bucketed in Python (`_add_rollups`):
# PostgreSQL materialises a multi-array unnest, which made a day of minutes 4× slower.
_RAW_BUCKETS = """
WITH pts AS (
    -- A sample both raw and in a chunk (a late row not merged yet) once, the raw row's value
    -- winning as in maintenance's merge.
    (SELECT DISTINCT ON (series_id, ms) series_id, ms, value FROM (
    SELECT series_id, round(extract(epoch FROM ts) * 1000)::bigint AS ms, value, 0 AS src
    FROM samples
    WHERE series_id = ANY($1::bigint[])
      AND ts >= to_timestamp($5::float8) AND ts <= to_timestamp($3::float8)
    UNION ALL
    SELECT series_id, ms, value, 1 FROM (
        SELECT c.series_id, c.block_start,
               c.first_ms + sum(u.d) OVER (PARTITION BY c.series_id, c.block_start ORDER BY u.o)
                   AS ms,
               u.v AS value
        FROM sample_chunks c, unnest(c.deltas, c.vals) WITH ORDINALITY AS u(d, v, o)
        -- Other modes read chunks from the raw range's start: an hour compacted after the
        -- watermark was read is there and no longer in the raw rows.
        WHERE ($7::boolean OR c.block_start >= to_timestamp($6::float8))
          AND c.series_id = ANY($1::bigint[])
          AND c.block_start > to_timestamp($5::float8 - 3600)
          AND c.block_start <= to_timestamp($3::float8)
          AND c.last_ms >= $5::float8 * 1000 AND c.first_ms <= $3::float8 * 1000
    ) c
    WHERE ms >= $5::float8 * 1000 AND ms <= $3::float8 * 1000
    ) x ORDER BY series_id, ms, src)
    UNION ALL
    -- The last sample before the raw range, for its first counter increase: one per series.
    SELECT series_id, last_ms, last_value FROM sample_chunks
    WHERE series_id = ANY($1::bigint[]) AND last_value IS NOT NULL
      AND block_start >= to_timestamp($6::float8 - 3600) AND block_start < to_timestamp($6::float8)
      AND last_ms < $6::float8 * 1000
), raw AS (
    SELECT series_id, ms / 1000.0::float8 AS t, value,
           value - lag(value) OVER (PARTITION BY series_id ORDER BY ms) AS delta
    FROM pts WHERE value <> 'NaN'::float8
)
-- max(ARRAY[t, value]) is the value with the latest time, without sorting each bucket.
SELECT series_id, floor(t / $4::float8) * $4::float8 AS b,
       min(value) AS mn, max(value) AS mx, sum(value) AS sm, count(*) AS cnt, max(t) AS lt,
       (max(ARRAY[t, value]))[2] AS lst,
       sum(CASE WHEN delta < 0 THEN value ELSE coalesce(delta, 0) END) AS inc
FROM raw WHERE t >= $6::float8 AND t >= $2::float8 AND t <= $3::float8
GROUP BY series_id, b
"""


# Only the arrays of the figures asked for leave the database ($4…$9: the ids that want each
# array, in the order of _ARRAY_NAMES; the others come back NULL): a day of minutes is 1,440
# floats per array and series, and decoding all of them was a third of a 24 h chart's time.
def _rollup_sql(table: str, base: str, lead: int) -> str:
    """The rollup query of `table`, whose rows start at column `base` and span `lead` s."""
    return f"""
SELECT series_id, extract(epoch FROM {base})::float8 AS base,
       xmin::text::bigint AS version, slots,
       CASE WHEN series_id = ANY($4::bigint[]) THEN mins END AS mins,
       CASE WHEN series_id = ANY($5::bigint[]) THEN maxs END AS maxs,
       CASE WHEN series_id = ANY($6::bigint[]) THEN sums END AS sums,
       CASE WHEN series_id = ANY($7::bigint[]) THEN counts END AS counts,
       CASE WHEN series_id = ANY($8::bigint[]) THEN lasts END AS lasts,
       CASE WHEN series_id = ANY($9::bigint[]) THEN incs END AS incs
FROM {table}
WHERE series_id = ANY($1::bigint[])
  AND {base} > to_timestamp($2::float8 - {lead}) AND {base} < to_timestamp($3::float8)
"""  # noqa: S608 (table and column names are this module's constants)


_ROLLUPS = {
    "1m": (_rollup_sql("rollup_1m", "block_start", 3600), 60.0),
    "1h": (_rollup_sql("rollup_1h", "day", 86400), 3600.0),
}

# A rollup query narrowed to the rows not in the cache ($10: series ids, $11: their bases).
_THESE_ROWS = {
    "1m": " AND (series_id, extract(epoch FROM block_start)::float8)"
    " IN (SELECT * FROM unnest($10::bigint[], $11::float8[]))",
    "1h": " AND (series_id, extract(epoch FROM day)::float8)"
    " IN (SELECT * FROM unnest($10::bigint[], $11::float8[]))",
}
# The rows of a range with their versions (xmin changes when a row is rewritten).
_VERSIONS = {
    "1m": """
SELECT series_id, extract(epoch FROM block_start)::float8 AS base, xmin::text::bigint AS version
FROM rollup_1m
WHERE series_id = ANY($1::bigint[])
  AND block_start > to_timestamp($2::float8 - 3600) AND block_start < to_timestamp($3::float8)
ORDER BY series_id, base
""",
    "1h": """
SELECT series_id, extract(epoch FROM day)::float8 AS base, xmin::text::bigint AS version
FROM rollup_1h
WHERE series_id = ANY($1::bigint[])
  AND day > to_timestamp($2::float8 - 86400) AND day < to_timestamp($3::float8)
ORDER BY series_id, base
""",
}

# Per bucket: [min, max, sum, count, time of last, last, increase]
_Acc = dict[float, list[float]]


def _merge_into(acc: _Acc, b: float, part: list[float]) -> None:
    have = acc.get(b)
    if have is None:
        acc[b] = part
        return
    if part[0] < have[0]:
        have[0] = part[0]
    if part[1] > have[1]:
        have[1] = part[1]
    have[2] += part[2]
    have[3] += part[3]
    if part[4] >= have[4]:
        have[4] = part[4]
        have[5] = part[5]
    have[6] += part[6]


@dataclass(slots=True)
class _Columns:
    """Buckets of one series made by whole rollup rows, in time order (the fast path).

    Arrays not asked for stay empty; the last entry of a bucket is ``last_offset`` after
    its start (every bucket holds its row's entries whole).
    """

    last_offset: float
    t: list[float] = field(default_factory=list)
    mn: list[float] = field(default_factory=list)
    mx: list[float] = field(default_factory=list)
    sm: list[float] = field(default_factory=list)
    cnt: list[float] = field(default_factory=list)
    lst: list[float] = field(default_factory=list)
    inc: list[float] = field(default_factory=list)

    def parts(self) -> Iterator[tuple[float, list[float]]]:
        """Each bucket as `_merge_into` takes it (zeros for arrays not asked for)."""
        zeros = [0.0] * len(self.t)
        mn, mx, sm = self.mn or zeros, self.mx or zeros, self.sm or zeros
        cnt, lst, inc = self.cnt or [1.0] * len(self.t), self.lst or zeros, self.inc or zeros
        for i, t in enumerate(self.t):
            yield t, [mn[i], mx[i], sm[i], cnt[i], t + self.last_offset, lst[i], inc[i]]


def _groups(values: Sequence[float], k: int) -> Iterator[tuple[float, ...]]:
    return zip(*[iter(values)] * k, strict=False)


def _rollup_args(
    ids: list[int], figures: Mapping[int, frozenset[Figure]] | None
) -> list[list[int]]:
    """$4…$9 of a rollup query: per array, the ids whose figures need it."""
    if figures is None:
        return [ids] * len(_ARRAY_NAMES)
    wanted: dict[str, list[int]] = {name: [] for name in _ARRAY_NAMES}
    for series_id in ids:
        names = {a for f in figures.get(series_id, FIGURES) for a in _ARRAYS[f]}
        for name in names:
            wanted[name].append(series_id)
    return [wanted[name] for name in _ARRAY_NAMES]


# A whole row folded: (its xmin, its first entry's time, the end of its last entry, the
# folded arrays as array('d') bytes in the order of _ARRAY_NAMES, None if not asked for).
# A plain tuple of numbers and bytes, which the garbage collector stops tracking (it walks
# arrays, named tuples and dataclass objects).
_CachedRow = tuple[int, float, float, tuple[bytes | None, ...]]


@dataclass
class RollupCache:
    """Whole rollup rows of closed hours folded for a step, kept by row version.

    A rollup row changes only when maintenance rewrites it (late rows merged into its hour,
    the next hour rebuilt after them); PostgreSQL gives the rewritten row a new ``xmin``,
    which is part of what a reader checks before using an entry, so a rewritten row is read
    again. Entries are folded arrays as bytes in tuples, which the garbage collector stops
    tracking, the oldest dropped past ``capacity``: a day of one server's history is ~1,100
    entries of ~1 KiB.
    """

    capacity: int = 10_000
    hits: int = 0
    misses: int = 0
    _entries: dict[tuple[object, ...], _CachedRow] = field(default_factory=dict)

    def get(self, key: tuple[object, ...], version: int, lo: float, hi: float) -> _CachedRow | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != version or entry[1] < lo or entry[2] > hi:
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: tuple[object, ...], entry: _CachedRow) -> None:
        self._entries.pop(key, None)
        self._entries[key] = entry
        while len(self._entries) > self.capacity:
            del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        return len(self._entries)


def _fold_whole(r: asyncpg.Record, k: int) -> list[Sequence[float] | None]:
    """A whole row's arrays folded k entries to a bucket (None: not asked for)."""
    mins, maxs, sums, counts, lasts, incs = (r[name] for name in _ARRAY_NAMES)
    if k == 1:
        return [mins, maxs, sums, counts, lasts, incs]
    return [
        None if mins is None else list(map(min, _groups(mins, k))),
        None if maxs is None else list(map(max, _groups(maxs, k))),
        None if sums is None else list(map(math.fsum, _groups(sums, k))),
        None if counts is None else list(map(sum, _groups(counts, k))),
        None if lasts is None else lasts[k - 1 :: k],
        None if incs is None else list(map(math.fsum, _groups(incs, k))),
    ]


def _extend(
    col: _Columns, first: float, last: float, step: float, folded: Sequence[Sequence[float] | None]
) -> None:
    if first.is_integer() and step.is_integer():  # always, with round steps
        col.t.extend(map(float, range(int(first), int(last), int(step))))
    else:
        col.t.extend([first + g * step for g in range(round((last - first) / step))])
    for into, values in zip(
        (col.mn, col.mx, col.sm, col.cnt, col.lst, col.inc), folded, strict=True
    ):
        if values is not None:
            into.extend(values)


async def _add_rollups(
    conn: asyncpg.Connection,
    found: dict[int, _Acc],
    columns: dict[int, _Columns],
    resolution: Resolution,
    ids: list[int],
    figures: Mapping[int, frozenset[Figure]] | None,
    lo: float,
    hi: float,
    step: float,
    cache: RollupCache | None = None,
) -> None:
    """Fold rollup entries with times in ``[lo, hi)`` into buckets of ``step``.

    A row of contiguous entries whose buckets it holds whole is folded with C-level slices
    (``map(min, zip(*[iter(x)] * k))``) into `columns`; any other row entry by entry into
    `found`. A day of one server's dashboard is ~44 × 25 rows of 60 minutes. With a `cache`,
    the rows' versions are listed first and only rows not folded before are read.
    """
    if lo >= hi:
        return
    query, width = _ROLLUPS[resolution]
    period = 3600.0 if resolution == "1m" else 86400.0
    k_float = step / width
    aligned = k_float.is_integer() and period % step == 0
    k = int(k_float)
    args = _rollup_args(ids, figures)
    hits: dict[tuple[int, float], _CachedRow] = {}
    asks: dict[int, tuple[bool, ...]] = {}
    if cache is None or not aligned:
        rows = await conn.fetch(query + " ORDER BY series_id, base", ids, lo, hi, *args)
        listing: list[tuple[int, float, int]] = [
            (r["series_id"], r["base"], r["version"]) for r in rows
        ]
        fetched = {(r["series_id"], r["base"]): r for r in rows}
    else:
        listing = [tuple(r) for r in await conn.fetch(_VERSIONS[resolution], ids, lo, hi)]
        # Which arrays a series asked for is part of its entries' keys.
        wants = [set(a) for a in args]
        asks = {sid: tuple(sid in w for w in wants) for sid in ids}
        missing: list[tuple[int, float]] = []
        for sid, base, version in listing:
            entry = cache.get((resolution, sid, base, step, asks[sid]), version, lo, hi)
            if entry is None:
                missing.append((sid, base))
            else:
                hits[(sid, base)] = entry
        fetched = {}
        if missing:
            sids, bases = [m[0] for m in missing], [m[1] for m in missing]
            more = _THESE_ROWS[resolution]
            for r in await conn.fetch(query + more, ids, lo, hi, *args, sids, bases):
                fetched[(r["series_id"], r["base"])] = r
    for series_id, base, _version in listing:
        r = fetched.get((series_id, base))
        if r is None:  # folded before (or deleted since the listing)
            hit = hits.get((series_id, base))
            if hit is not None:
                col = columns.get(series_id)
                if col is None:
                    col = columns[series_id] = _Columns((k - 1) * width)
                arrays = [None if f is None else array("d", f) for f in hit[3]]
                _extend(col, hit[1], hit[2], step, arrays)
            continue
        slots: list[int] = r["slots"]
        n = len(slots)
        first, last = base + slots[0] * width, base + (slots[-1] + 1) * width
        if (
            aligned
            and slots[-1] - slots[0] == n - 1
            and slots[0] % k == 0
            and n % k == 0
            and first >= lo
            and last <= hi
        ):
            col = columns.get(series_id)
            if col is None:
                col = columns[series_id] = _Columns((k - 1) * width)
            folded = _fold_whole(r, k)
            _extend(col, first, last, step, folded)
            if cache is not None:
                kept = tuple(None if f is None else array("d", f).tobytes() for f in folded)
                key = (resolution, series_id, base, step, asks[series_id])
                cache.put(key, (r["version"], first, last, kept))
            continue
        mins, maxs, sums, counts, lasts, incs = (r[name] for name in _ARRAY_NAMES)
        # Arrays not asked for are folded as zeros (their figures are not handed out).
        zeros = [0.0] * n
        mn, mx, sm = mins or zeros, maxs or zeros, sums or zeros
        cnt, lst, inc = counts or [1] * n, lasts or zeros, incs or zeros
        acc = found.setdefault(series_id, {})
        i = 0
        while i < n:
            t = base + slots[i] * width
            if t < lo or t >= hi:
                i += 1
                continue
            b = math.floor(t / step) * step
            # Entries up to the bucket's end (slots are sorted; usually contiguous).
            limit = min((b + step - base) / width, (hi - base) / width)
            j = bisect.bisect_left(slots, limit, i)
            _merge_into(
                acc,
                b,
                [
                    min(mn[i:j]),
                    max(mx[i:j]),
                    math.fsum(sm[i:j]),
                    float(sum(cnt[i:j])),
                    base + slots[j - 1] * width,
                    lst[j - 1],
                    math.fsum(inc[i:j]),
                ],
            )
            i = j


def _append_acc(b: Buckets, acc: _Acc, keys: list[float], want: frozenset[Figure]) -> None:
    if not keys:
        return
    rows = [acc[t] for t in keys]
    b.timestamps.extend(keys)
    if "min" in want:
        b.min.extend([r[0] for r in rows])
    if "max" in want:
        b.max.extend([r[1] for r in rows])
    if "avg" in want:
        b.avg.extend([r[2] / r[3] for r in rows])
    if "last" in want:
        b.last.extend([r[5] for r in rows])
    if "increase" in want:
        b.increase.extend([r[6] for r in rows])


def _append_columns(b: Buckets, col: _Columns, want: frozenset[Figure]) -> None:
    b.timestamps.extend(col.t)
    if "min" in want:
        b.min.extend(col.mn)
    if "max" in want:
        b.max.extend(col.mx)
    if "avg" in want:
        b.avg.extend(map(operator.truediv, col.sm, col.cnt))
    if "last" in want:
        b.last.extend(col.lst)
    if "increase" in want:
        b.increase.extend(col.inc)


async def fetch_buckets(
    conn: asyncpg.Connection,
    ids: list[int],
    start: float,
    end: float,
    step: float,
    resolution: Resolution = "raw",
    figures: Mapping[int, frozenset[Figure]] | None = None,
    cache: RollupCache | None = None,
) -> dict[int, Buckets]:
    """{series id: buckets} over ``[start, end]``, from ``resolution`` where it is complete.

    With "1h", hours of days not yet rolled up come from "1m"; with "1m", minutes of hours
    not yet compacted come from raw samples. The step should be a multiple of the resolution.
    ``figures`` says which of `Buckets`' figures a series needs (all when it is not given,
    or for an id it does not hold); the others stay empty lists and cost nothing. A `cache`
    keeps whole rollup rows folded for the next chart of the same step.
    """
    compacted, daily = await marks(conn)
    never = end + 1  # an empty range for a source that is not used
    h_from, h_to = (start, min(end, daily)) if resolution == "1h" else (never, never)
    m_from = max(start, h_to) if resolution == "1h" else start
    m_from, m_to = (m_from, min(end, compacted)) if resolution != "raw" else (never, never)
    raw_from = max(start, m_to) if resolution != "raw" else start
    found: dict[int, _Acc] = {}
    # Five minutes before the raw range give its first counter increase; raw mode reads
    # compacted chunks, the others only the newest raw rows (and chunks of hours compacted
    # since the watermark was read).
    args = (ids, start, end, float(step), raw_from - 300, raw_from, resolution == "raw")
    if end - raw_from > 2 * HOUR:
        async with conn.transaction():
            # Sorting a day of a server's samples must not spill to disk.
            await conn.execute("SET LOCAL work_mem = '64MB'")
            rows = await conn.fetch(_RAW_BUCKETS, *args)
    else:
        # The usual chart over rollups reads an hour or so of raw rows: no need for the
        # three extra round trips, which on a busy machine were a third of a day's chart.
        rows = await conn.fetch(_RAW_BUCKETS, *args)
    for r in rows:
        acc = found.setdefault(r["series_id"], {})
        part = [r["mn"], r["mx"], r["sm"], float(r["cnt"]), r["lt"], r["lst"], r["inc"]]
        _merge_into(acc, r["b"], part)
    columns: dict[int, _Columns] = {}
    await _add_rollups(conn, found, columns, "1h", ids, figures, h_from, h_to, step, cache)
    await _add_rollups(conn, found, columns, "1m", ids, figures, m_from, m_to, step, cache)
    out: dict[int, Buckets] = {}
    for series_id in found.keys() | columns.keys():
        want = FIGURES if figures is None else figures.get(series_id, FIGURES)
        acc = found.get(series_id, {})
        col = columns.get(series_id)
        b = out[series_id] = Buckets()
        keys = sorted(acc)
        before: list[float] = keys
        after: list[float] = []
        if col is not None and keys:
            # Buckets from rows folded one by one (a range's partial first hour, the newest
            # raw samples) usually lie before or after the whole rows, and go around them.
            lo = bisect.bisect_left(keys, col.t[0])
            hi = bisect.bisect_right(keys, col.t[-1])
            if lo < hi:
                # Rare: they fall among the whole rows' buckets; merge them one by one.
                for t, part in col.parts():
                    _merge_into(acc, t, part)
                before, col = sorted(acc), None
            else:
                before, after = keys[:lo], keys[hi:]
        _append_acc(b, acc, before, want)
        if col is not None:
            _append_columns(b, col, want)
        _append_acc(b, acc, after, want)
    return out
