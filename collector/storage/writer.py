"""The writer: batches scraped samples into PostgreSQL through COPY.

Results are queued in memory and flushed about once a second. A flush that fails (database
away) leaves its batch at the head of the queue, to be retried in order; the queue is bounded
and counts what it drops. Issue #4 adds a disk spool behind this queue.
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

import asyncpg

from vpsmon.collector.scrape.loop import ScrapeResult
from vpsmon.collector.scrape.target import Labels

log = logging.getLogger("vpsmon.writer")

# Scrapes per transaction: large enough for COPY to pay off, small enough to retry cheaply.
BATCH = 500

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
    def __init__(self, pool: asyncpg.Pool, job: str, *, max_pending: int = 100_000) -> None:
        self._pool = pool
        self._job = job
        self._pending: deque[ScrapeResult] = deque()
        self._max_pending = max_pending
        self._series_ids: dict[bytes, int] = {}
        self.dropped = 0
        self.written_samples = 0
        self._failing = False
        self.rejected = 0

    async def append(self, result: ScrapeResult) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("write queue full, dropping oldest scrape dropped=%d", self.dropped)
        self._pending.append(result)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception:  # the writer must outlive any surprise; the queue is kept
                log.exception("flush failed unexpectedly")

    async def flush(self) -> bool:
        """Write everything queued, in order, in chunks of `BATCH` scrapes.

        Returns False, keeping the unwritten scrapes queued, when the database is away. A chunk
        the database refuses for its content (not for being away) is set aside and counted in
        `rejected`, so one bad scrape cannot stop every write behind it.
        """
        while self._pending:
            batch = list(itertools.islice(self._pending, BATCH))
            try:
                await self._write(batch)
            except Exception as err:  # asyncpg also raises InternalClientError on a dying link
                if _refused(err):
                    # Find the scrapes it refuses, one at a time; keep the rest.
                    if not await self._write_each(batch):
                        return False
                    continue
                if not self._failing:
                    log.warning(
                        "database write failed, keeping %d scrapes queued error=%s",
                        len(self._pending),
                        _first_line(err),
                    )
                    self._failing = True
                return False
            for _ in batch:
                self._pending.popleft()
            if self._failing:
                log.info("database writes resumed")
                self._failing = False
        return True

    async def _write_each(self, batch: list[ScrapeResult]) -> bool:
        for result in batch:
            try:
                await self._write([result])
            except Exception as err:
                if not _refused(err):
                    return False
                self.rejected += 1
                log.error(
                    "database refused a scrape, dropping it target=%s error=%s",
                    result.target.url,
                    _first_line(err),
                )
            self._pending.popleft()
        return True

    async def _write(self, batch: list[ScrapeResult]) -> None:
        rows: list[tuple[bytes, datetime, float]] = []
        keys: list[tuple[bytes, int, str, Labels]] = []
        for result in batch:
            base = result.target.target_labels(self._job)
            # Milliseconds, as Prometheus keeps them: chunks store millisecond deltas.
            ts = datetime.fromtimestamp(round(result.timestamp, 3), UTC)
            for sample in result.with_synthetic():
                labels = _merge(sample.labels, base)
                key = series_hash(sample.name, labels)
                if key not in self._series_ids:
                    keys.append((key, result.target.server_id, sample.name, labels))
                rows.append((key, ts, sample.value))
        found: dict[bytes, int] = {}
        async with self._pool.acquire() as conn, conn.transaction():
            if keys:
                found = await self._resolve(conn, keys)
            # New ids join the cache only after commit: a rolled-back series row is gone.
            ids = {**self._series_ids, **found}
            # A key still unknown belongs to a server deleted while its scrape was queued.
            records = [(ids[k], ts, v) for k, ts, v in rows if k in ids]
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS samples_stage (LIKE samples) ON COMMIT DELETE ROWS"
            )
            await conn.copy_records_to_table(
                "samples_stage", records=records, columns=["series_id", "ts", "value"]
            )
            # ON CONFLICT: a batch retried after a lost commit acknowledgement is stored once.
            await conn.execute(
                "INSERT INTO samples SELECT * FROM samples_stage ON CONFLICT DO NOTHING"
            )
            await self._update_servers(conn, batch)
        self._series_ids.update(found)
        self.written_samples += len(records)

    async def _resolve(
        self, conn: asyncpg.Connection, keys: Iterable[tuple[bytes, int, str, Labels]]
    ) -> dict[bytes, int]:
        unique = {k[0]: k for k in keys}
        hashes = list(unique)
        await conn.execute(
            "INSERT INTO series (server_id, metric, labels, labels_hash)"
            " SELECT s, m, l::jsonb, h FROM unnest($1::int[], $2::text[], $3::text[], $4::bytea[])"
            " AS u(s, m, l, h)"
            " WHERE EXISTS (SELECT 1 FROM servers WHERE id = u.s)"
            " ON CONFLICT (labels_hash) DO NOTHING",
            [unique[h][1] for h in hashes],
            [unique[h][2] for h in hashes],
            [json.dumps({k: _text(v) for k, v in unique[h][3]}) for h in hashes],
            hashes,
        )
        rows = await conn.fetch(
            "SELECT id, labels_hash FROM series WHERE labels_hash = ANY($1::bytea[])", hashes
        )
        return {bytes(row["labels_hash"]): row["id"] for row in rows}

    async def _update_servers(self, conn: asyncpg.Connection, batch: list[ScrapeResult]) -> None:
        latest: dict[int, ScrapeResult] = {}
        for result in batch:
            latest[result.target.server_id] = result
        await conn.executemany(
            "UPDATE servers SET last_error = $2,"
            " last_seen_at = CASE WHEN $2::text IS NULL THEN $3 ELSE last_seen_at END"
            " WHERE id = $1",
            [
                (sid, _text(r.error), datetime.fromtimestamp(r.timestamp, UTC))
                for sid, r in latest.items()
            ],
        )


def _text(value: str | None) -> str | None:
    """PostgreSQL text and jsonb cannot hold NUL; an exporter's garbage must not fail a batch."""
    return value.replace("\x00", "\ufffd") if value else value


def _merge(sample_labels: Labels, target_labels: Labels) -> Labels:
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
