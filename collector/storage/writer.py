"""The writer: batches scraped samples into PostgreSQL through COPY.

Results are queued in memory and flushed about once a second. A flush that fails (database
away) leaves its batch at the head of the queue, to be retried in order; the queue is bounded
and counts what it drops. With a spool (collector/storage/spool.py) the queue goes to disk
while the database is away and is replayed, in order, once it is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import repeat

import asyncpg

from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.target import Labels
from vpsmon.collector.storage.spool import Spool, StoredScrape

log = logging.getLogger("vpsmon.writer")

# Scrapes per transaction: large enough for COPY to pay off, small enough to retry cheaply.
BATCH = 500
# ... and samples per transaction. At 1,000 targets of ~300 series, 500 scrapes were 150,000
# samples (and, on the first scrapes, as many new series) in one transaction: on a busy
# machine that outlasted the command timeout, was retried whole, and never got through.
BATCH_SAMPLES = 50_000

# Series hashes one server's cache keeps at most (`_hashes_of`).
HASH_CACHE_MAX = 20_000
# Series ids the writer keeps by hash (a fleet of 1,000 servers has ~330,000): beyond this the
# oldest quarter is forgotten and looked up again when needed (one SELECT per batch).
SERIES_CACHE_MAX = 1_000_000
# Batches of the memory queue written at once, each on its own connection.
WRITERS = 2
# New series created per transaction, ahead of the samples that need them.
SERIES_PER_TRANSACTION = 20_000

# SQLSTATE classes that mean "the database refused this data" (data exception, integrity
# constraint, program limit): retrying cannot help. Anything else (connection lost, shutdown,
# too many connections, locks, a database not accepting connections) is "away": keep and retry.
_REFUSED_CLASSES = ("22", "23", "54")


def _refused(err: BaseException) -> bool:
    state = getattr(err, "sqlstate", None) or ""
    return isinstance(err, asyncpg.PostgresError) and state[:2] in _REFUSED_CLASSES


def _first_line(err: BaseException) -> str:
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__


def series_hash(name: str, labels: Labels) -> bytes:
    canonical = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
    return hashlib.sha256(canonical.encode()).digest()


class SampleWriter:
    """Queues scrapes and writes them in order; spools to disk while the database is away.

    ``spool``: without one, scrapes wait in memory (bounded by ``max_pending``, oldest dropped
    first). With one, every flush that finds the database away moves the memory queue to the
    spool, and the next flush that reaches it replays the spool, oldest first, before anything
    newer, so the database sees scrapes in the order they were taken.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        job: str,
        *,
        max_pending: int = 100_000,
        spool: Spool | None = None,
        series_cache_max: int = SERIES_CACHE_MAX,
    ) -> None:
        self._pool = pool
        self._job = job
        self._pending: deque[StoredScrape] = deque()
        self._max_pending = max_pending
        self._series_ids: dict[bytes, int] = {}
        self._series_cache_max = series_cache_max
        # server id -> (target labels, sample names, sample labels, series ids) of its last
        # scrape: a scrape of the same shape takes its ids without hashing or lookups.
        self._shapes: dict[int, tuple[Labels, tuple[str, ...], tuple[Labels, ...], list[int]]] = {}
        # Scrapes whose write failed with the database away: the commit may have happened, so
        # they are written again through the path that skips what is already stored.
        self._unsure: set[int] = set()
        self._hash_cache: dict[int, tuple[Labels, dict[tuple[str, Labels], bytes]]] = {}
        self._spool = spool
        self._lock = asyncio.Lock()
        self.dropped = 0
        self.written_samples = 0
        self.duplicates = 0  # samples not stored: their series already had one at that time
        self._failing = False
        self.rejected = 0
        self.spooled = 0  # scrapes ever written to the spool
        self.replayed = 0  # scrapes ever replayed from it
        self.last_error: str | None = None
        self._full_warned = False
        # Series of no server (recording rules, ALERTS): name, labels, timestamp, value.
        self._series_pending: deque[tuple[str, Labels, float, float]] = deque()

    async def append(self, result: ScrapeResult) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("write queue full, dropping oldest scrape dropped=%d", self.dropped)
        self._pending.append(
            StoredScrape(
                result.target.server_id,
                result.target.url,
                # Milliseconds, as Prometheus keeps them: chunks store millisecond deltas.
                round(result.timestamp, 3),
                result.error,
                result.target.target_labels(self._job),
                tuple(result.with_synthetic()),
                result.kind == "scrape",
            )
        )

    async def append_series(self, samples: Iterable[tuple[str, Labels, float, float]]) -> None:
        """Queue samples of series that belong to no server: the rule manager's outputs.

        Each is (metric name, sorted labels without __name__, Unix seconds, value). They are
        written after the scrapes of each flush and wait in memory (bounded, oldest dropped and
        counted) while the database is away; the rules recompute them anyway.
        """
        for sample in samples:
            if len(self._series_pending) >= self._max_pending * 10:
                self._series_pending.popleft()
                self.dropped += 1
            self._series_pending.append(sample)

    @property
    def pending(self) -> int:
        """Scrapes waiting in memory (the spool's are in `health()`)."""
        return len(self._pending)

    def health(self) -> dict[str, float | int | bool | str | None]:
        """What the UI and /metrics show about the writer."""
        spool = self._spool
        return {
            "database_ok": not self._failing,
            "last_error": self.last_error,
            "pending_scrapes": len(self._pending),
            "written_samples": self.written_samples,
            "duplicate_samples": self.duplicates,
            "dropped_scrapes": self.dropped + (spool.dropped if spool else 0),
            "rejected_scrapes": self.rejected,
            "spooled_scrapes": self.spooled,
            "replayed_scrapes": self.replayed,
            "spool_bytes": spool.size if spool else 0,
            "spool_max_bytes": spool.max_bytes if spool else 0,
            "spool_full": bool(spool and spool.full),
        }

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:  # the writer must outlive any surprise; the queue is kept
                log.exception("flush failed unexpectedly")

    async def flush(self) -> bool:
        """Write everything queued (the spool first), in order, in chunks of `BATCH` scrapes.

        Returns False when the database is away: the unwritten scrapes stay queued, or go to
        the spool when there is one. A chunk the database refuses for its content (not for
        being away) is set aside and counted in `rejected`, so one bad scrape cannot stop
        every write behind it.
        """
        async with self._lock:
            ok = await self._replay() and await self._drain(self._pending)
            if not ok and self._spool is not None and self._pending:
                await self._spill()
            return ok and await self._flush_series()

    async def _flush_series(self) -> bool:
        while self._series_pending:
            batch = list(itertools.islice(self._series_pending, BATCH * 20))
            try:
                await self._write_series(batch)
            except Exception as err:
                if not _refused(err):
                    self.last_error = _first_line(err)
                    return False
                self.rejected += len(batch)
                log.error("database refused rule series, dropping them error=%s", _first_line(err))
            for _ in batch:
                self._series_pending.popleft()
        return True

    async def _write_series(self, batch: list[tuple[str, Labels, float, float]]) -> None:
        unique: dict[bytes, tuple[str, Labels]] = {}
        rows: list[tuple[bytes, datetime, float]] = []
        for name, labels, timestamp, value in batch:
            key = series_hash(name, labels)
            unique.setdefault(key, (name, labels))
            rows.append((key, datetime.fromtimestamp(round(timestamp, 3), UTC), value))
        async with self._pool.acquire() as conn, conn.transaction():
            hashes = [h for h in unique if h not in self._series_ids]
            found: dict[bytes, int] = {}
            if hashes:
                await conn.execute(
                    "INSERT INTO series (server_id, metric, labels, labels_hash)"
                    " SELECT NULL, m, l::jsonb, h FROM unnest($1::text[], $2::text[], $3::bytea[])"
                    " AS u(m, l, h) ON CONFLICT (labels_hash) DO NOTHING",
                    [unique[h][0] for h in hashes],
                    [json.dumps({k: _text(v) for k, v in unique[h][1]}) for h in hashes],
                    hashes,
                )
                fetched = await conn.fetch(
                    "SELECT id, labels_hash FROM series WHERE labels_hash = ANY($1::bytea[])",
                    hashes,
                )
                found = {bytes(r["labels_hash"]): r["id"] for r in fetched}
            records = _records(rows, self._series_ids, found)
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS samples_stage (LIKE samples) ON COMMIT DELETE ROWS"
            )
            await conn.copy_records_to_table(
                "samples_stage", records=records, columns=["series_id", "ts", "value"]
            )
            # A later value at the same timestamp wins (a rule re-evaluated after a restart).
            await conn.execute(
                "INSERT INTO samples SELECT DISTINCT ON (series_id, ts) * FROM samples_stage"
                " ON CONFLICT (series_id, ts) DO UPDATE SET value = EXCLUDED.value"
            )
        self._remember(found)
        self._trim()
        self.written_samples += len(records)

    async def _replay(self) -> bool:
        spool = self._spool
        if spool is None or spool.empty:
            return True
        segments = spool.segments()
        for segment in segments:
            queue = deque(await asyncio.to_thread(spool.read, segment))
            count = len(queue)
            if not await self._drain(queue, replay=True):
                # Part of the segment may be in; replaying it again stores nothing twice.
                return False
            spool.remove(segment)
            self.replayed += count
        log.info("spool replayed segments=%d", len(segments))
        return True

    async def _spill(self) -> None:
        assert self._spool is not None
        batch = list(self._pending)
        self._pending.clear()
        self._unsure.clear()  # what the spool replays goes through the ON CONFLICT path
        refused = await asyncio.to_thread(self._spool.append, batch)
        self.spooled += len(batch) - refused
        if refused:
            if not self._full_warned or self._spool.dropped % 1000 < refused:
                log.warning(
                    "spool full: the database is away and %d bytes of scrapes wait on disk "
                    "(storage.spool.max_bytes=%d); dropping new scrapes dropped=%d",
                    self._spool.size,
                    self._spool.max_bytes,
                    self._spool.dropped,
                )
                self._full_warned = True
        else:
            self._full_warned = False

    async def _drain(self, queue: deque[StoredScrape], replay: bool = False) -> bool:
        """Write ``queue`` from its head. The memory queue goes `WRITERS` batches at a time on
        as many connections, so that one batch's rows are built while PostgreSQL stores the
        other's (a spool replay goes one batch at a time, in order). A batch that fails stays
        at the head of the queue; one written beside it leaves the queue."""
        while queue:
            batches = [_take(queue)]
            if not replay:
                while len(batches) < WRITERS:
                    # Not a server of an earlier batch: the servers' last_seen_at/last_error
                    # must follow the later scrape whichever transaction commits first.
                    offset = sum(map(len, batches))
                    taken = {s.server_id for batch in batches for s in batch}
                    more = _take(queue, offset, taken)
                    if not more:
                        break
                    batches.append(more)
            if len(batches) == 1:
                errors: list[BaseException | None] = [None]
                try:
                    await self._write(batches[0], replay)
                except Exception as err:  # asyncpg raises InternalClientError on a dying link
                    errors = [err]
            else:
                results = await asyncio.gather(
                    *(self._write(b, replay) for b in batches), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, BaseException) and not isinstance(result, Exception):
                        raise result  # cancelled: the queue is as it was
                errors = list(results)
            failed: list[StoredScrape] = []
            for batch, error in zip(batches, errors, strict=True):
                for _ in batch:
                    queue.popleft()
                if error is not None:
                    failed.extend(batch)
            # The failed batches go back to the head, in their order.
            queue.extendleft(reversed(failed))
            first = next((e for e in errors if e is not None), None)
            if first is None:
                if self._failing:
                    log.info("database writes resumed")
                    self._failing = False
                continue
            assert isinstance(first, Exception)
            if _refused(first) and all(e is None or _refused(e) for e in errors):
                # Find the scrapes it refuses, one at a time; keep the rest.
                if not await self._write_each(queue, failed, replay):
                    return False
                continue
            self._unsure.update(map(id, failed))
            self.last_error = _first_line(next(e for e in errors if e and not _refused(e)))
            if not self._failing:
                log.warning(
                    "database write failed, keeping %d scrapes %s error=%s",
                    len(queue),
                    "spooled" if self._spool is not None else "queued",
                    self.last_error,
                )
                self._failing = True
            return False
        return True

    async def _write_each(
        self, queue: deque[StoredScrape], batch: list[StoredScrape], replay: bool
    ) -> bool:
        for scrape in batch:
            try:
                await self._write([scrape], replay)
            except Exception as err:
                if not _refused(err):
                    self._unsure.add(id(scrape))
                    return False
                self.rejected += 1
                log.error(
                    "database refused a scrape, dropping it target=%s error=%s",
                    scrape.url,
                    _first_line(err),
                )
            queue.popleft()
        return True

    async def _write(self, batch: list[StoredScrape], replay: bool = False) -> None:
        """Store one batch in one transaction, its new series created ahead in their own.

        A batch never tried before is COPied straight into ``samples``: none of it can be
        stored yet. A replayed one (the spool), one whose earlier try may have committed (the
        database went away mid-write), backfilled samples (they may overlap stored ones) and a
        fresh batch that meets a stored sample after all (two targets with the same labels, a
        series twice in one scrape) go through a stage and ``INSERT … ON CONFLICT DO
        NOTHING``, which stores each sample once and counts the rest."""
        missing: dict[bytes, tuple[bytes, int, str, Labels]] = {}
        records = self._records_of(batch, missing, {})
        if missing:
            created = await self._create_series(list(missing.values()))
            records = self._records_of(batch, {}, created)
            self._trim()
        unsure = self._unsure
        safe = replay or not all(s.status for s in batch)
        if unsure and not safe:
            safe = any(id(s) in unsure for s in batch)
        async with self._pool.acquire() as conn:
            if not safe:
                try:
                    async with conn.transaction():
                        await conn.copy_records_to_table(
                            "samples", records=records, columns=["series_id", "ts", "value"]
                        )
                        await self._update_servers(conn, batch)
                except asyncpg.UniqueViolationError:
                    safe = True
                else:
                    self.written_samples += len(records)
            if safe:
                async with conn.transaction():
                    await conn.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS samples_stage (LIKE samples)"
                        " ON COMMIT DELETE ROWS"
                    )
                    await conn.copy_records_to_table(
                        "samples_stage", records=records, columns=["series_id", "ts", "value"]
                    )
                    # ON CONFLICT: a batch retried after a lost commit acknowledgement is
                    # stored once.
                    status = await conn.execute(
                        "INSERT INTO samples SELECT * FROM samples_stage ON CONFLICT DO NOTHING"
                    )
                    await self._update_servers(conn, batch)
                inserted = _inserted(status, len(records))
                self.written_samples += inserted
                # Samples of a series at a time it already had: a replayed batch, or two
                # targets with the same labels (then one target's samples silently lose; the
                # count shows it).
                self.duplicates += len(records) - inserted
        if unsure:
            unsure.difference_update(map(id, batch))

    def _records_of(
        self,
        batch: list[StoredScrape],
        missing: dict[bytes, tuple[bytes, int, str, Labels]],
        created: dict[bytes, int],
    ) -> list[tuple[int, datetime, float]]:
        """The batch's rows (series id, time, value). Series the writer does not know (in
        its cache or ``created``) go into ``missing`` and their samples are left out; so are
        those of a deleted server."""
        records: list[tuple[int, datetime, float]] = []
        shapes = self._shapes
        for scrape in batch:
            if not scrape.samples:
                continue
            names, labels, values = zip(*scrape.samples, strict=True)
            shape = shapes.get(scrape.server_id)
            if (
                shape is not None
                and shape[1] == names
                and shape[2] == labels
                and shape[0] == scrape.base
            ):
                ids = shape[3]
            else:
                found = self._ids_of(scrape, names, labels, missing, created)
                if None in found:
                    ts = datetime.fromtimestamp(scrape.timestamp, UTC)
                    records.extend(
                        (i, ts, v) for i, v in zip(found, values, strict=True) if i is not None
                    )
                    continue
                ids = found  # type: ignore[assignment]
                shapes[scrape.server_id] = (scrape.base, names, labels, ids)
            records.extend(
                zip(
                    ids, repeat(datetime.fromtimestamp(scrape.timestamp, UTC)), values, strict=False
                )
            )
        return records

    def _ids_of(
        self,
        scrape: StoredScrape,
        names: tuple[str, ...],
        labels: tuple[Labels, ...],
        missing: dict[bytes, tuple[bytes, int, str, Labels]],
        created: dict[bytes, int],
    ) -> list[int | None]:
        hashes = self._hashes_of(scrape.server_id, scrape.base)
        known = self._series_ids
        ids: list[int | None] = []
        for name, sample_labels in zip(names, labels, strict=True):
            key = hashes.get((name, sample_labels))
            if key is None:
                merged = merge_labels(sample_labels, scrape.base)
                key = hashes[(name, sample_labels)] = series_hash(name, merged)
            i = known.get(key)
            if i is None:
                i = created.get(key)
            if i is None and key not in missing:
                merged = merge_labels(sample_labels, scrape.base)
                missing[key] = (key, scrape.server_id, name, merged)
            ids.append(i)
        return ids

    async def _create_series(self, keys: list[tuple[bytes, int, str, Labels]]) -> dict[bytes, int]:
        """Look up or create ``keys``' series, committed ahead of the samples that need them
        and in transactions of at most `SERIES_PER_TRANSACTION` rows, so that a fleet's first
        scrapes do not make one huge transaction; the ids join the cache after each commit."""
        keys.sort()
        created: dict[bytes, int] = {}
        for i in range(0, len(keys), SERIES_PER_TRANSACTION):
            async with self._pool.acquire() as conn, conn.transaction():
                found = await self._resolve(conn, keys[i : i + SERIES_PER_TRANSACTION])
            self._remember(found)
            created.update(found)
        return created

    def _remember(self, found: dict[bytes, int]) -> None:
        self._series_ids.update(found)

    def _trim(self) -> None:
        """Bound the id cache; called once a batch's rows are built from it."""
        ids = self._series_ids
        if len(ids) > self._series_cache_max:
            # Forget the oldest quarter (dicts keep insertion order); the shapes keep the ids
            # every server's scrapes need, and a forgotten one is looked up again.
            for key in list(itertools.islice(ids, len(ids) - self._series_cache_max * 3 // 4)):
                del ids[key]

    def _hashes_of(self, server_id: int, base: Labels) -> dict[tuple[str, Labels], bytes]:
        """The server's (name, scraped labels) → series hash cache: merging the target's
        labels and hashing every sample of every scrape was a tenth of the collector's CPU
        at 1,000 targets. One label set per server (a changed one starts afresh), bounded."""
        cached = self._hash_cache.get(server_id)
        if cached is None or cached[0] != base or len(cached[1]) > HASH_CACHE_MAX:
            cached = self._hash_cache[server_id] = (base, {})
        return cached[1]

    async def _resolve(
        self, conn: asyncpg.Connection, keys: Iterable[tuple[bytes, int, str, Labels]]
    ) -> dict[bytes, int]:
        """Series ids for ``keys``: known rows looked up in one ``SELECT`` (a restarted
        collector's whole fleet), the missing ones created in one ``INSERT`` (sorted by hash,
        so the unique index is walked in order) that returns their ids. A row another writer
        created meanwhile is read back; a key of a deleted server stays unresolved."""
        unique = {k[0]: k for k in keys}
        rows = await conn.fetch(
            "SELECT id, labels_hash FROM series WHERE labels_hash = ANY($1::bytea[])", list(unique)
        )
        found = {bytes(row["labels_hash"]): row["id"] for row in rows}
        missing = sorted(h for h in unique if h not in found)
        if not missing:
            return found
        created = await conn.fetch(
            "INSERT INTO series (server_id, metric, labels, labels_hash)"
            " SELECT s, m, l::jsonb, h FROM unnest($1::int[], $2::text[], $3::text[], $4::bytea[])"
            " AS u(s, m, l, h)"
            " WHERE EXISTS (SELECT 1 FROM servers WHERE id = u.s)"
            " ON CONFLICT (labels_hash) DO NOTHING RETURNING id, labels_hash",
            [unique[h][1] for h in missing],
            [unique[h][2] for h in missing],
            [json.dumps({k: _text(v) for k, v in unique[h][3]}) for h in missing],
            missing,
        )
        found.update((bytes(row["labels_hash"]), row["id"]) for row in created)
        if len(created) < len(missing):
            rest = [h for h in missing if h not in found]
            rows = await conn.fetch(
                "SELECT id, labels_hash FROM series WHERE labels_hash = ANY($1::bytea[])", rest
            )
            found.update((bytes(row["labels_hash"]), row["id"]) for row in rows)
        return found

    async def _update_servers(self, conn: asyncpg.Connection, batch: list[StoredScrape]) -> None:
        latest: dict[int, StoredScrape] = {}
        for scrape in batch:
            if scrape.status:  # backfilled samples and end markers say nothing of the target now
                latest[scrape.server_id] = scrape
        if not latest:
            return
        # One statement for the batch (ids sorted: rows locked in one order by every writer).
        ordered = sorted(latest.items())
        await conn.execute(
            "UPDATE servers SET last_error = u.e,"
            " last_seen_at = CASE WHEN u.e IS NULL THEN u.t ELSE servers.last_seen_at END"
            " FROM unnest($1::int[], $2::text[], $3::timestamptz[]) AS u(i, e, t)"
            " WHERE servers.id = u.i",
            [sid for sid, _ in ordered],
            [_text(r.error) for _, r in ordered],
            [datetime.fromtimestamp(r.timestamp, UTC) for _, r in ordered],
        )


def _take(
    queue: deque[StoredScrape], offset: int = 0, avoid: set[int] | None = None
) -> list[StoredScrape]:
    """The oldest scrapes of ``queue`` from ``offset`` up to `BATCH` scrapes or
    `BATCH_SAMPLES` samples (at least one scrape unless ``avoid``), stopping before a scrape
    of a server in ``avoid``."""
    batch: list[StoredScrape] = []
    samples = 0
    for scrape in itertools.islice(queue, offset, None):
        if avoid is not None and scrape.server_id in avoid:
            break
        if batch and (len(batch) >= BATCH or samples + len(scrape.samples) > BATCH_SAMPLES):
            break
        batch.append(scrape)
        samples += len(scrape.samples)
    return batch


def _inserted(status: str, default: int) -> int:
    """The row count of an INSERT's command tag ("INSERT 0 1234")."""
    try:
        return int(status.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return default


def _records(
    rows: list[tuple[bytes, datetime, float]], known: dict[bytes, int], found: dict[bytes, int]
) -> list[tuple[int, datetime, float]]:
    """Rows with their series ids, from the cache or the ids just resolved."""
    get = known.get
    if not found:
        return [(i, ts, v) for k, ts, v in rows if (i := get(k)) is not None]
    out = []
    for k, ts, v in rows:
        i = get(k)
        if i is None:
            i = found.get(k)
            if i is None:
                continue
        out.append((i, ts, v))
    return out


def _text(value: str | None) -> str | None:
    """PostgreSQL text and jsonb cannot hold NUL; an exporter's garbage must not fail a batch."""
    return value.replace("\x00", "\ufffd") if value else value


def merge_labels(sample_labels: Labels, target_labels: Labels) -> Labels:
    """Target labels win over scraped ones, as with Prometheus' honor_labels: false.

    (Prometheus renames clashing scraped labels to exported_<name>; we do the same.)
    """
    if not sample_labels:
        return target_labels
    merged = dict(target_labels)
    for k, v in sample_labels:
        if k in merged:
            merged["exported_" + k] = v
        else:
            merged[k] = v
    return tuple(sorted(merged.items()))
