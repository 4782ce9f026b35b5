"""The TimescaleDB layout of the sample store (docs/storage.md, "TimescaleDB").

When the extension is there (or installable by the connecting role) and the database holds no
samples yet, `prepare` turns the store into hypertables after the migrations:

- ``samples`` becomes a hypertable with one-hour chunks (the hours of the plain layout),
  compressed by TimescaleDB (segment by ``series_id``, order by ``ts``) once the hour has been
  rolled up; ``sample_chunks`` stays empty.
- ``rollup_1m`` and ``rollup_1h`` keep their rows (arrays per series and hour / day) and become
  hypertables with day / 30-day chunks, so retention drops whole chunks.
- Retention policies (``add_retention_policy``) per resolution from collector.yml.

The rollups stay our own job (`maintain_step`, from the collector's maintenance loop), not
continuous aggregates: the counter increase needs the previous sample (a window function, which
continuous aggregates do not allow) and the readers keep reading the same rollup rows, so
store.py, chart.py and reader.py are the same code on both layouts. Compression is done by the
same step right after an hour is rolled up, not by a compression policy, so that a late row
(spool replay, backfill) is never hidden in a chunk that was compressed after its hour was
rolled up: a chunk of an hour already rolled up that is not (wholly) compressed holds late rows,
and the step rolls that hour up again and compresses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import asyncpg

if TYPE_CHECKING:
    from vpsmon.collector.storage.maintenance import MaintenanceReport, Retention

log = logging.getLogger("vpsmon.storage.timescale")

Mode = Literal["auto", "on", "off"]
Layout = Literal["plain", "timescaledb"]
MODES: tuple[Mode, ...] = ("auto", "on", "off")

HOUR = 3600
DAY = 86400
# Chunk intervals: one hour of raw samples (the plain layout's partitions), a day of 1-minute
# rollup rows (24 rows per series), 30 days of 1-hour rollup rows (30 rows per series).
CHUNKS = {"samples": "1 hour", "rollup_1m": "1 day", "rollup_1h": "30 days"}
# Hours rolled up (or rolled up again) per step, as the plain layout's LATE_BLOCKS_PER_STEP.
BLOCKS_PER_STEP = 48

# The migration lock (migrate.py): layout changes are serialised with migrations.
_MIGRATE_LOCK = 0x76707331


class StorageLayoutError(Exception):
    """storage.timescaledb asks for something this database cannot do; the message says why."""


@dataclass(frozen=True)
class Support:
    usable: bool
    version: str | None  # the extension's version (installed, or available to install)
    reason: str  # why not usable ("" when usable)


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _floor(seconds: float, unit: int) -> float:
    return float(int(seconds // unit) * unit)


def parse_mode(value: object) -> Mode:
    """auto | on | off (YAML's unquoted on/off arrive as booleans)."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    text = str(value).strip().lower()
    for mode in MODES:
        if text == mode:
            return mode
    raise ValueError(f"expected auto, on or off, got {value!r}")


async def layout(conn: asyncpg.Connection) -> Layout:
    """The layout this database's sample store has: a partitioned table or a hypertable."""
    kind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'samples'::regclass")
    return "plain" if kind == "p" else "timescaledb"


async def probe(conn: asyncpg.Connection, *, install: bool = True) -> Support:
    """Whether TimescaleDB can carry the store here; installs the extension when allowed.

    The licence setting exists only once the extension is loaded in a database, so an
    installation that turns out to be Apache-only (no compression) is rolled back.
    """
    version = await conn.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    )
    if version is not None:
        reason = await _licence_problem(conn)
        return Support(not reason, version, reason)
    available = await conn.fetchval(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if available is None:
        return Support(False, None, "the server has no timescaledb extension")
    preload = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    if "timescaledb" not in preload:
        return Support(
            False,
            available,
            "timescaledb is installed on the server but not in shared_preload_libraries",
        )
    if not install:
        return Support(True, available, "")
    try:
        async with conn.transaction():
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            reason = await _licence_problem(conn)
            if reason:
                raise _NotUsable(reason)
    except _NotUsable as err:
        return Support(False, available, str(err))
    except asyncpg.PostgresError as err:
        first = (str(err) or type(err).__name__).splitlines()[0]
        return Support(False, available, f"CREATE EXTENSION timescaledb failed: {first}")
    version = await conn.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    )
    return Support(True, version, "")


class _NotUsable(Exception):
    pass


async def _licence_problem(conn: asyncpg.Connection) -> str:
    licence = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    if licence == "timescale":
        return ""
    return (
        f"timescaledb.license is {licence!r}: compression needs the Timescale License build"
        " (timescaledb.license = 'timescale')"
    )


async def _holds_samples(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM samples) OR EXISTS (SELECT 1 FROM sample_chunks)"
            " OR EXISTS (SELECT 1 FROM rollup_1m) OR EXISTS (SELECT 1 FROM rollup_1h)"
        )
    )


async def prepare(pool: asyncpg.Pool, mode: Mode, retention: Retention) -> Layout:
    """After the migrations: choose the layout (storage.timescaledb), convert, set policies.

    ``off`` (the default) keeps the plain layout; ``auto`` uses TimescaleDB when it is usable
    and the database holds no samples yet (an existing store is never converted behind your
    back); ``on`` requires it and converts a plain store that holds samples (copying them). A
    store already in hypertables stays so whatever the setting (nothing converts back; with
    ``off`` a warning says so).
    """
    if mode not in MODES:
        raise StorageLayoutError(f"storage.timescaledb: expected auto, on or off, got {mode!r}")
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATE_LOCK)
        try:
            return await _prepare(conn, mode, retention)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATE_LOCK)


async def _prepare(conn: asyncpg.Connection, mode: Mode, retention: Retention) -> Layout:
    current = await layout(conn)
    if current == "timescaledb":
        if mode == "off":
            log.warning(
                "storage.timescaledb is off, but this database's sample store is already in"
                " TimescaleDB hypertables, and there is no conversion back: it stays so"
            )
        await set_retention_policies(conn, retention)
        return current
    if mode == "off":
        return "plain"
    if mode == "auto" and await _holds_samples(conn):
        if (await probe(conn, install=False)).usable:
            log.warning(
                "TimescaleDB is available but this database already holds samples in the plain"
                " layout; it stays so (storage.timescaledb: on converts it, copying every sample)"
            )
        return "plain"
    support = await probe(conn)
    if not support.usable:
        if mode == "on":
            raise StorageLayoutError(f"storage.timescaledb is on, but {support.reason}")
        log.info("sample store: plain PostgreSQL layout (%s)", support.reason)
        return "plain"
    async with conn.transaction():
        await _convert(conn)
    await set_retention_policies(conn, retention)
    log.info("sample store: TimescaleDB %s hypertables", support.version)
    return "timescaledb"


async def _convert(conn: asyncpg.Connection) -> None:
    """The plain store's tables as hypertables; raw samples and chunks are copied over."""
    await conn.execute(
        "CREATE TABLE samples_hyper (series_id bigint NOT NULL, ts timestamptz NOT NULL,"
        " value double precision NOT NULL, PRIMARY KEY (series_id, ts))"
    )
    # No default index on ts: reads go by (series_id, ts), maintenance by whole chunks.
    await conn.execute(
        "SELECT create_hypertable('samples_hyper', by_range('ts', $1::text::interval),"
        " create_default_indexes => false)",
        CHUNKS["samples"],
    )
    await conn.execute("INSERT INTO samples_hyper SELECT series_id, ts, value FROM samples")
    await conn.execute(
        "INSERT INTO samples_hyper SELECT c.series_id, to_timestamp((c.first_ms"
        " + sum(u.d) OVER (PARTITION BY c.series_id, c.block_start ORDER BY u.o)) / 1000.0), u.v"
        " FROM sample_chunks c, unnest(c.deltas, c.vals) WITH ORDINALITY AS u(d, v, o)"
        " ON CONFLICT DO NOTHING"
    )
    await conn.execute("DROP TABLE samples")  # and its partitions, the default one too
    await conn.execute("TRUNCATE sample_chunks")
    await conn.execute("ALTER TABLE samples_hyper RENAME TO samples")
    await conn.execute("ALTER TABLE samples RENAME CONSTRAINT samples_hyper_pkey TO samples_pkey")
    await conn.execute(
        "ALTER TABLE samples SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'series_id', timescaledb.compress_orderby = 'ts')"
    )
    for table, column in (("rollup_1m", "block_start"), ("rollup_1h", "day")):
        await conn.execute(
            f"SELECT create_hypertable('{table}', by_range('{column}', $1::text::interval),"
            " create_default_indexes => false, migrate_data => true)",
            CHUNKS[table],
        )


async def set_retention_policies(conn: asyncpg.Connection, retention: Retention) -> None:
    """One retention policy per resolution, replaced when collector.yml changed it."""
    for table, keep in (
        ("samples", retention.raw),
        ("rollup_1m", retention.rollup_1m),
        ("rollup_1h", retention.rollup_1h),
    ):
        same = await conn.fetchval(
            "SELECT (config->>'drop_after')::interval = justify_hours(make_interval(secs => $2))"
            " FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
            " AND hypertable_schema = current_schema() AND hypertable_name = $1",
            table,
            keep,
        )
        if same:
            continue
        await conn.execute("SELECT remove_retention_policy($1, if_exists => true)", table)
        await conn.execute(
            "SELECT add_retention_policy($1,"
            " drop_after => justify_hours(make_interval(secs => $2::float8)))",
            table,
            keep,
        )


# Chunks of `samples` (one per hour) with their state; status bit 1: compressed, bit 8: rows
# written after compression (a partially compressed chunk).
_CHUNKS = """
SELECT format('%I.%I', c.chunk_schema, c.chunk_name) AS chunk,
       extract(epoch FROM c.range_start)::float8 AS block,
       c.is_compressed AND (k.status & 8) = 0 AS whole
FROM timescaledb_information.chunks c
JOIN _timescaledb_catalog.chunk k ON k.schema_name = c.chunk_schema AND k.table_name = c.chunk_name
WHERE c.hypertable_schema = current_schema() AND c.hypertable_name = 'samples'
  AND c.range_end <= $1
ORDER BY c.range_start
"""

_BLOCK_ROWS = """
CREATE TEMP TABLE block_rows ON COMMIT DROP AS
SELECT series_id, round(extract(epoch FROM ts) * 1000)::bigint AS ms, value
FROM samples WHERE ts >= $1 AND ts < $2
"""

# The last value that is not NaN of the hour before, per series: what sample_chunks.last_value
# gives the plain layout's rollup (the first increase of an hour).
_PREVIOUS = """
CREATE TEMP TABLE block_previous ON COMMIT DROP AS
SELECT DISTINCT ON (series_id) series_id, $1::timestamptz AS block_start, value AS last_value
FROM samples
WHERE ts >= $1 AND ts < $2 AND value <> 'NaN'::float8
  AND series_id IN (SELECT DISTINCT series_id FROM block_rows)
ORDER BY series_id, ts DESC
"""


def _rollup_1m() -> str:
    """The plain layout's 1-minute rollup, its previous hour's last value from `_PREVIOUS`."""
    from vpsmon.collector.storage.maintenance import UPSERT_ROLLUP_1M

    plain = "LEFT JOIN sample_chunks p"
    assert plain in UPSERT_ROLLUP_1M
    return UPSERT_ROLLUP_1M.replace(plain, "LEFT JOIN block_previous p")


async def roll_up_block(conn: asyncpg.Connection, block: float, chunk: str | None) -> list[int]:
    """Build one closed hour's 1-minute rollups from its raw rows and compress its chunk.

    Writers inserting into the hour wait for this transaction (the chunk is locked), so every
    row committed before is rolled up and every row after it makes the chunk partially
    compressed again, which the next step sees. Returns the ids of the series rolled up.
    """
    from vpsmon.collector.storage import maintenance

    start, end = _dt(block), _dt(block + HOUR)
    rollup_1m = _rollup_1m()
    async with conn.transaction():
        if chunk is not None:
            await conn.execute(f"LOCK TABLE {chunk} IN EXCLUSIVE MODE")
        await conn.execute(_BLOCK_ROWS, start, end)
        ids: list[int] = [
            r["series_id"] for r in await conn.fetch("SELECT DISTINCT series_id FROM block_rows")
        ]
        if ids:
            await conn.execute(_PREVIOUS, _dt(block - HOUR), start)
            await conn.execute(
                rollup_1m,
                start,
                _dt(block - HOUR),
                int(block * 1000),
            )
        if chunk is not None:
            await conn.execute("SELECT compress_chunk($1::regclass)", chunk)
        day = _floor(block, DAY)
        daily = await maintenance.get_mark(conn, "daily_until")
        if ids and daily is not None and day < daily:
            # A late row in a day already rolled up by the hour: redo that day's rows.
            await conn.execute(maintenance.UPSERT_ROLLUP_1H, _dt(day), _dt(day + DAY), ids)
    return ids


async def maintain_step(
    conn: asyncpg.Connection, now: float, retention: Retention, report: MaintenanceReport
) -> None:
    """Everything due at ``now`` in the TimescaleDB layout (maintenance.maintain calls it)."""
    from vpsmon.collector.storage import maintenance

    report.deleted_rows += await expire(conn, now, retention, report)
    horizon = _floor(now - maintenance.GRACE, HOUR)
    mark = await maintenance.get_mark(conn, "compacted_until")
    chunks = {r["block"]: r for r in await conn.fetch(_CHUNKS, _dt(horizon))}
    due = [
        (block, r["chunk"])
        for block, r in chunks.items()
        if mark is None or block >= mark or not r["whole"]
    ]
    done: set[float] = set()
    for block, chunk in due[:BLOCKS_PER_STEP]:
        await roll_up_block(conn, block, chunk)
        done.add(block)
        if mark is not None and block < mark:
            report.late_merged.append(block)
            # The next hour's first counter increase starts from this hour's last value,
            # which a late row may have changed: roll that hour up again too.
            after = chunks.get(block + HOUR)
            if after is not None and block + HOUR < mark and block + HOUR not in done:
                if all(b != block + HOUR for b, _ in due):
                    await roll_up_block(conn, block + HOUR, after["chunk"])
                    done.add(block + HOUR)
        else:
            report.compacted.append(block)
    if len(due) > BLOCKS_PER_STEP:
        return  # the watermark waits for the rest
    if mark is None or mark < horizon:
        await maintenance.set_mark(conn, "compacted_until", horizon)
    await maintenance.roll_up_days(conn, max(mark or horizon, horizon), report)


async def expire(
    conn: asyncpg.Connection, now: float, retention: Retention, report: MaintenanceReport
) -> int:
    """Drop chunks past each resolution's retention (as the policies do, at ``now``).

    Raw chunks are hours, so dropping them is exact; rollup chunks are longer, so rows before
    the cut in the chunk that straddles it are deleted, which keeps the plain layout's times.
    """
    deleted = 0
    for table, column, keep in (
        ("samples", None, retention.raw),
        ("rollup_1m", "block_start", retention.rollup_1m),
        ("rollup_1h", "day", retention.rollup_1h),
    ):
        cut = _dt(_floor(now - keep, HOUR))
        dropped = await conn.fetch(
            "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz) AS c", table, cut
        )
        report.dropped_chunks.extend(r["c"] for r in dropped)
        if column is not None:
            # A day's rollup_1h row goes when its last hour is past retention (maintenance.py).
            cut = _dt(_floor(_floor(now - keep, HOUR), DAY)) if column == "day" else cut
            status = await conn.execute(f"DELETE FROM {table} WHERE {column} < $1", cut)  # noqa: S608
            deleted += int(status.split()[-1])
    return deleted


async def pause_policies(conn: asyncpg.Connection) -> int:
    """Unschedule this database's retention jobs (tests and benchmarks that write old times)."""
    return len(
        await conn.fetch(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_retention' AND hypertable_schema = current_schema()"
        )
    )
