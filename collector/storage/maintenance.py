"""Storage maintenance: hourly partitions ahead, compaction of closed hours, rollups, retention.

One step (`maintain(pool, now, …)`) does everything that is due at ``now``; the collector calls
it once a minute (`run_maintenance`). It is safe to run from several collectors at once (an
advisory lock lets one of them work) and to interrupt anywhere: every hour is compacted in one
transaction, so a crash leaves either the raw partition or its chunks, never neither.

Layout and reasons: docs/storage.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from vpsmon.collector.config import CollectorConfig

log = logging.getLogger("vpsmon.storage.maintenance")

HOUR = 3600
DAY = 86400
# Partitions that exist ahead of now, so that writes never wait for DDL.
PARTITIONS_AHEAD = 3
# An hour is compacted this long after it closed: scrapes in flight and the writer's queue land
# in its partition first. Later rows still arrive (spool replay, backfill): they go to the
# default partition and are merged into the hour's chunks by the next step.
GRACE = 600.0
# Late hours merged per step, so a large backlog (an old 001 table) never stalls a step.
LATE_BLOCKS_PER_STEP = 48

_LOCK_ID = 0x76707332
_PARTITION = re.compile(r"samples_p(\d{10})")


@dataclass(frozen=True)
class Retention:
    """How long each resolution is kept, in seconds (collector.yml `storage.retention.*`)."""

    raw: float = 15 * DAY
    rollup_1m: float = 90 * DAY
    rollup_1h: float = 730 * DAY

    @classmethod
    def of(cls, config: CollectorConfig) -> Retention:
        return cls(config.retention_raw, config.retention_rollup_1m, config.retention_rollup_1h)


@dataclass
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    compacted: list[float] = field(default_factory=list)  # hours (block starts), in order
    late_merged: list[float] = field(default_factory=list)
    days: list[float] = field(default_factory=list)
    deleted_rows: int = 0
    dropped_chunks: list[str] = field(default_factory=list)  # TimescaleDB layout
    skipped: bool = False  # another collector held the lock


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _floor(seconds: float, unit: int) -> float:
    return float(int(seconds // unit) * unit)


def partition_name(block: float) -> str:
    return "samples_p" + _dt(block).strftime("%Y%m%d%H")


def _block_of(name: str) -> float | None:
    match = _PARTITION.fullmatch(name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%d%H").replace(tzinfo=UTC).timestamp()


async def partitions(conn: asyncpg.Connection) -> dict[float, str]:
    """{hour: partition name} of the hourly partitions of `samples`."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'samples'::regclass"
    )
    out = {}
    for row in rows:
        block = _block_of(row["relname"])
        if block is not None:
            out[block] = row["relname"]
    return out


async def get_mark(conn: asyncpg.Connection, name: str) -> float | None:
    value = await conn.fetchval("SELECT value FROM storage_state WHERE name = $1", name)
    return value.timestamp() if value is not None else None


async def set_mark(conn: asyncpg.Connection, name: str, value: float) -> None:
    await conn.execute(
        "INSERT INTO storage_state (name, value) VALUES ($1, $2)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        name,
        _dt(value),
    )


async def ensure_partitions(conn: asyncpg.Connection, now: float) -> list[str]:
    """Create the partitions of the current hour and the next `PARTITIONS_AHEAD` hours.

    Nothing to do in the TimescaleDB layout: TimescaleDB creates its chunks as rows arrive.
    """
    from vpsmon.collector.storage.timescale import layout

    if await layout(conn) == "timescaledb":
        return []
    have = await partitions(conn)
    compacted = await get_mark(conn, "compacted_until") or 0.0
    created = []
    first = _floor(now, HOUR)
    for i in range(PARTITIONS_AHEAD + 1):
        block = first + i * HOUR
        if block in have or block < compacted:
            continue
        name = partition_name(block)
        lo, hi = _dt(block).isoformat(), _dt(block + HOUR).isoformat()
        async with conn.transaction():
            # Rows of this hour already in the default partition move into the new one; the
            # lock keeps writers from adding more until it is attached.
            await conn.execute("LOCK TABLE samples_default IN EXCLUSIVE MODE")
            await conn.execute(f"CREATE TABLE {name} (LIKE samples INCLUDING DEFAULTS)")
            await conn.execute(
                f"ALTER TABLE {name} ADD CONSTRAINT {name}_range"
                f" CHECK (ts >= '{lo}' AND ts < '{hi}')"
            )
            await conn.execute(
                f"WITH moved AS (DELETE FROM samples_default WHERE ts >= $1 AND ts < $2"  # noqa: S608
                f" RETURNING *) INSERT INTO {name} SELECT * FROM moved",
                _dt(block),
                _dt(block + HOUR),
            )
            await conn.execute(
                f"ALTER TABLE samples ATTACH PARTITION {name} FOR VALUES FROM ('{lo}') TO ('{hi}')"
            )
            # The CHECK made attaching instant; the partition bound now says the same.
            await conn.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_range")
        created.append(name)
        log.info("created partition name=%s", name)
    return created


# The rows of one hour, from its raw partition or the default partition and from chunks it
# already has (for series that have raw rows: late rows merge into their chunk). A sample
# stored twice (same series and millisecond) is kept once: the raw row's, being the later
# write. A replayed scrape carries the value already stored; a rule re-evaluated after a
# restart, or a re-import, means its new value (the writer's ON CONFLICT DO UPDATE for rule
# outputs says the same in an hour not compacted yet).
_BLOCK_ROWS = """
CREATE TEMP TABLE block_rows ON COMMIT DROP AS
SELECT DISTINCT ON (series_id, ms) series_id, ms, value FROM (
    SELECT series_id, round(extract(epoch FROM ts) * 1000)::bigint AS ms, value, 1 AS src
    FROM samples WHERE ts >= $1 AND ts < $2
    UNION ALL
    SELECT c.series_id,
           c.first_ms + sum(u.d) OVER (PARTITION BY c.series_id ORDER BY u.o), u.v, 0
    FROM sample_chunks c, unnest(c.deltas, c.vals) WITH ORDINALITY AS u(d, v, o)
    WHERE c.block_start = $1
      AND c.series_id IN (SELECT series_id FROM samples WHERE ts >= $1 AND ts < $2)
) x
ORDER BY series_id, ms, src DESC
"""

# The samples of one compacted hour, for the given series: what the next hour's rollup is
# rebuilt from when this hour's last value changed.
_CHUNK_ROWS = """
CREATE TEMP TABLE block_rows ON COMMIT DROP AS
SELECT c.series_id, c.first_ms + sum(u.d) OVER (PARTITION BY c.series_id ORDER BY u.o) AS ms,
       u.v AS value
FROM sample_chunks c, unnest(c.deltas, c.vals) WITH ORDINALITY AS u(d, v, o)
WHERE c.block_start = $1 AND c.series_id = ANY($2::bigint[])
"""

_LAST_VALUES = (
    "SELECT series_id, last_value FROM sample_chunks"
    " WHERE block_start = $1 AND series_id = ANY($2::bigint[])"
)

_UPSERT_CHUNKS = """
INSERT INTO sample_chunks (series_id, block_start, first_ms, last_ms, last_value, deltas, vals)
SELECT series_id, $1, min(ms), max(ms),
       (array_agg(value ORDER BY ms DESC) FILTER (WHERE value <> 'NaN'::float8))[1],
       array_agg(delta ORDER BY ms), array_agg(value ORDER BY ms)
FROM (
    SELECT series_id, ms, value,
           coalesce(ms - lag(ms) OVER (PARTITION BY series_id ORDER BY ms), 0)::integer AS delta
    FROM block_rows
) x
GROUP BY series_id
ON CONFLICT (series_id, block_start) DO UPDATE SET
    first_ms = excluded.first_ms, last_ms = excluded.last_ms, last_value = excluded.last_value,
    deltas = excluded.deltas, vals = excluded.vals
"""

# Per minute: min, max, sum, count, last and the counter increase. The increase of the first
# sample of the hour is taken from the previous hour's last value, so sums of increases over
# hours have no hole at each hour boundary. NaNs (staleness markers) count for nothing.
UPSERT_ROLLUP_1M = """
WITH r AS (
    SELECT b.series_id, b.ms, b.value,
           b.value - coalesce(lag(b.value) OVER (PARTITION BY b.series_id ORDER BY b.ms),
                              p.last_value) AS delta
    FROM block_rows b
    LEFT JOIN sample_chunks p ON p.series_id = b.series_id AND p.block_start = $2
    WHERE b.value <> 'NaN'::float8
), m AS (
    SELECT series_id, ((ms - $3) / 60000)::smallint AS slot,
           min(value) AS mn, max(value) AS mx, sum(value) AS sm, count(*)::integer AS cnt,
           (array_agg(value ORDER BY ms DESC))[1] AS lst,
           coalesce(sum(CASE WHEN delta < 0 THEN value ELSE delta END), 0) AS inc
    FROM r GROUP BY 1, 2
)
INSERT INTO rollup_1m (series_id, block_start, slots, mins, maxs, sums, counts, lasts, incs)
SELECT series_id, $1, array_agg(slot ORDER BY slot), array_agg(mn ORDER BY slot),
       array_agg(mx ORDER BY slot), array_agg(sm ORDER BY slot), array_agg(cnt ORDER BY slot),
       array_agg(lst ORDER BY slot), array_agg(inc ORDER BY slot)
FROM m GROUP BY series_id
ON CONFLICT (series_id, block_start) DO UPDATE SET
    slots = excluded.slots, mins = excluded.mins, maxs = excluded.maxs, sums = excluded.sums,
    counts = excluded.counts, lasts = excluded.lasts, incs = excluded.incs
"""

UPSERT_ROLLUP_1H = """
WITH h AS (
    SELECT r.series_id, (extract(epoch FROM r.block_start - $1) / 3600)::smallint AS slot,
           min(u.mn) AS mn, max(u.mx) AS mx, sum(u.sm) AS sm, sum(u.cnt)::integer AS cnt,
           (array_agg(u.lst ORDER BY u.s DESC))[1] AS lst, sum(u.inc) AS inc
    FROM rollup_1m r,
         unnest(r.slots, r.mins, r.maxs, r.sums, r.counts, r.lasts, r.incs)
             AS u(s, mn, mx, sm, cnt, lst, inc)
    WHERE r.block_start >= $1 AND r.block_start < $2
      AND ($3::bigint[] IS NULL OR r.series_id = ANY($3::bigint[]))
    GROUP BY 1, 2
)
INSERT INTO rollup_1h (series_id, day, slots, mins, maxs, sums, counts, lasts, incs)
SELECT series_id, $1, array_agg(slot ORDER BY slot), array_agg(mn ORDER BY slot),
       array_agg(mx ORDER BY slot), array_agg(sm ORDER BY slot), array_agg(cnt ORDER BY slot),
       array_agg(lst ORDER BY slot), array_agg(inc ORDER BY slot)
FROM h GROUP BY series_id
ON CONFLICT (series_id, day) DO UPDATE SET
    slots = excluded.slots, mins = excluded.mins, maxs = excluded.maxs, sums = excluded.sums,
    counts = excluded.counts, lasts = excluded.lasts, incs = excluded.incs
"""


async def compact_block(conn: asyncpg.Connection, block: float) -> list[int]:
    """Turn one closed hour's raw rows into chunks and 1-minute rollups; drop the raw rows.

    Returns the ids of the series that had raw rows in the hour.
    """
    name = partition_name(block)
    start, end = _dt(block), _dt(block + HOUR)
    async with conn.transaction():
        have = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
        # Writers adding rows to this hour wait until it is compacted, then land in default.
        locked = f"{name}, samples_default" if have else "samples_default"
        await conn.execute(f"LOCK TABLE {locked} IN EXCLUSIVE MODE")
        await conn.execute(_BLOCK_ROWS, start, end)
        ids: list[int] = [
            r["series_id"] for r in await conn.fetch("SELECT DISTINCT series_id FROM block_rows")
        ]
        changed: list[int] = []
        if ids:
            before = await _last_values(conn, start, ids)
            await conn.execute(_UPSERT_CHUNKS, start)
            await conn.execute(UPSERT_ROLLUP_1M, start, _dt(block - HOUR), int(block * 1000))
            after = await _last_values(conn, start, ids)
            changed = [i for i, v in after.items() if i not in before or before[i] != v]
        if have:
            await conn.execute(f"DROP TABLE {name}")
        await conn.execute("DELETE FROM samples_default WHERE ts >= $1 AND ts < $2", start, end)
        redone = await _redo_next_rollup(conn, block + HOUR, changed) if changed else []
        await _advance_mark(conn, block + HOUR)
        daily = await get_mark(conn, "daily_until")
        for day, which in ((_floor(block, DAY), ids), (_floor(block + HOUR, DAY), redone)):
            if which and daily is not None and day < daily:
                # A late row in a day already rolled up by the hour: redo that day's rows.
                await conn.execute(UPSERT_ROLLUP_1H, _dt(day), _dt(day + DAY), which)
    return ids


async def _advance_mark(conn: asyncpg.Connection, until: float) -> None:
    """Move `compacted_until` to ``until`` when no raw row is left before it.

    In the same transaction as the compaction: charts read an hour from rollup_1m when it is
    before the mark and from raw rows otherwise, so an hour whose raw rows were dropped but
    whose mark was set only at the end of the step vanished from charts in between.
    """
    mark = await get_mark(conn, "compacted_until")
    if mark is not None and mark >= until:
        return
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM samples WHERE ts < $1)", _dt(until)):
        return
    await set_mark(conn, "compacted_until", until)


async def _last_values(
    conn: asyncpg.Connection, start: datetime, ids: list[int]
) -> dict[int, float | None]:
    return {r["series_id"]: r["last_value"] for r in await conn.fetch(_LAST_VALUES, start, ids)}


async def _redo_next_rollup(conn: asyncpg.Connection, block: float, ids: list[int]) -> list[int]:
    """Rebuild the 1-minute rollups of the compacted hour ``block`` for ``ids``.

    Its first counter increase starts from the previous hour's last value, which a late row
    of that hour has just changed: left alone, the increase up to the late row would count
    twice (once in the previous hour, once in this one's first minute), or never when the
    previous hour had no sample of the series before. Returns the series rebuilt.
    """
    await conn.execute("DROP TABLE block_rows")
    await conn.execute(_CHUNK_ROWS, _dt(block), ids)
    redone: list[int] = [
        r["series_id"] for r in await conn.fetch("SELECT DISTINCT series_id FROM block_rows")
    ]
    if redone:
        await conn.execute(UPSERT_ROLLUP_1M, _dt(block), _dt(block - HOUR), int(block * 1000))
    return redone


async def build_day(conn: asyncpg.Connection, day: float) -> None:
    """The hourly rollup of one closed UTC day, from its 1-minute rollups."""
    await conn.execute(UPSERT_ROLLUP_1H, _dt(day), _dt(day + DAY), None)


async def maintain(
    pool: asyncpg.Pool, now: float, retention: Retention | None = None
) -> MaintenanceReport:
    """Everything due at ``now``: partitions ahead, compaction, daily rollups, retention."""
    retention = retention or Retention()
    report = MaintenanceReport()
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_ID):
            report.skipped = True
            return report
        try:
            from vpsmon.collector.storage import timescale

            if await timescale.layout(conn) == "timescaledb":
                await timescale.maintain_step(conn, now, retention, report)
            else:
                await _maintain(conn, now, retention, report)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return report


async def _maintain(
    conn: asyncpg.Connection, now: float, retention: Retention, report: MaintenanceReport
) -> None:
    # Retention first: no work is spent compacting rows that are about to be deleted by
    # every resolution.
    report.deleted_rows += await _expire(conn, now, retention)
    report.created = await ensure_partitions(conn, now)
    horizon = _floor(now - GRACE, HOUR)
    # Late rows first, so that compacting the closed partitions after them can move the
    # watermark hour by hour (compact_block): charts read raw rows only after it.
    # date_trunc with 'UTC': in the session's time zone a +05:30 offset cuts hours at :30.
    late = await conn.fetch(
        "SELECT DISTINCT date_trunc('hour', ts, 'UTC') AS block FROM samples_default"
        " WHERE ts < $1 ORDER BY 1 LIMIT $2",
        _dt(horizon),
        LATE_BLOCKS_PER_STEP + 1,
    )
    for row in late[:LATE_BLOCKS_PER_STEP]:
        await compact_block(conn, row["block"].timestamp())
        report.late_merged.append(row["block"].timestamp())
    if len(late) > LATE_BLOCKS_PER_STEP:
        # More late hours than one step takes: the closed partitions and the watermark wait
        # for them. Compacting a partition before the watermark can pass it would leave its
        # hour in neither the raw rows nor (for charts) the rollups.
        return
    for block, _name in sorted((await partitions(conn)).items()):
        if block + HOUR <= horizon:
            await compact_block(conn, block)
            report.compacted.append(block)
    compacted = await get_mark(conn, "compacted_until")
    if compacted is None or compacted < horizon:
        await set_mark(conn, "compacted_until", horizon)
        compacted = horizon
    await roll_up_days(conn, compacted, report)


async def roll_up_days(
    conn: asyncpg.Connection, compacted: float, report: MaintenanceReport
) -> None:
    """The hourly rollups of every day closed before ``compacted`` that has none yet."""
    daily = await get_mark(conn, "daily_until")
    if daily is None:
        first = await conn.fetchval("SELECT min(block_start) FROM rollup_1m")
        if first is None:
            return
        daily = _floor(first.timestamp(), DAY)
    while daily + DAY <= compacted:
        async with conn.transaction():
            await build_day(conn, daily)
            await set_mark(conn, "daily_until", daily + DAY)
        report.days.append(daily)
        daily += DAY


async def _expire(conn: asyncpg.Connection, now: float, retention: Retention) -> int:
    deleted = 0
    longest = max(retention.raw, retention.rollup_1m, retention.rollup_1h)
    # Rows past the raw retention in hours never compacted (after the watermark: maintenance
    # stopped for longer than the raw retention, an upgraded 001 table) are compacted first,
    # their chunks going at the next step, so the rollups keep them. Before the watermark the
    # hour's chunks are gone and its rollups hold the hour: a late row there cannot be merged
    # and would replace them with a rollup of itself alone, so it goes (as with the raw rows).
    mark = await get_mark(conn, "compacted_until")
    raw_cut = _floor(now - retention.raw, HOUR)
    default_cut = max(_floor(now - longest, HOUR), min(raw_cut, mark if mark is not None else 0.0))
    status = await conn.execute("DELETE FROM samples_default WHERE ts < $1", _dt(default_cut))
    deleted += int(status.split()[-1])
    for query, keep, unit in (
        ("DELETE FROM sample_chunks WHERE block_start < $1", retention.raw, HOUR),
        ("DELETE FROM rollup_1m WHERE block_start < $1", retention.rollup_1m, HOUR),
        # A day's row holds 24 hours: it goes when its last hour is past retention, not its
        # first (which dropped up to 23 hours that were still to be kept).
        ("DELETE FROM rollup_1h WHERE day < $1", retention.rollup_1h, DAY),
    ):
        status = await conn.execute(query, _dt(_floor(_floor(now - keep, HOUR), unit)))
        deleted += int(status.split()[-1])
    for block, name in (await partitions(conn)).items():
        # A partition's hour was never compacted: it is compacted first, as above.
        if block + HOUR <= now - longest:
            await conn.execute(f"DROP TABLE {name}")
    return deleted


async def run_maintenance(pool: asyncpg.Pool, retention: Retention, interval: float = 60.0) -> None:
    """The collector's maintenance task: one step now, then one every ``interval``."""
    import time

    while True:
        try:
            report = await maintain(pool, time.time(), retention)
            if report.compacted or report.late_merged or report.days or report.deleted_rows:
                log.info(
                    "storage maintenance compacted=%d late=%d days=%d deleted_rows=%d",
                    len(report.compacted),
                    len(report.late_merged),
                    len(report.days),
                    report.deleted_rows,
                )
        except Exception as err:  # the database may be away; try again next time
            log.warning("storage maintenance failed error=%s", str(err).splitlines()[0:1])
        await asyncio.sleep(interval)
