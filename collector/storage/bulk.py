"""Append whole series with their own timestamps: import and backfill (issue #8).

The scrape writer appends one scrape at a time for a target; an import brings arbitrary series
with past timestamps. Series get the same identity as the writer gives them (`series_hash` of
name and labels), so imported samples of a series that is also scraped join that series.
Everything is written in one transaction: an import is stored completely or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from vpsmon.collector.storage.writer import series_hash


@dataclass
class BulkSeries:
    name: str
    labels: tuple[tuple[str, str], ...]  # sorted, without __name__
    timestamps: Sequence[float]  # seconds
    values: Sequence[float]


@dataclass(frozen=True)
class BulkResult:
    series: int
    samples: int  # samples stored (a sample already stored at the same time is kept)


async def append_series(
    pool: asyncpg.Pool, series: Sequence[BulkSeries], *, server_id: int | None = None
) -> BulkResult:
    """Store ``series``; ``server_id`` ties them to a server (access control, deletion)."""
    keys = [series_hash(s.name, s.labels) for s in series]
    async with pool.acquire() as conn, conn.transaction():
        if server_id is not None:
            exists = await conn.fetchval("SELECT 1 FROM servers WHERE id = $1", server_id)
            if not exists:
                raise ValueError(f"no server with id {server_id}")
        await conn.execute(
            "INSERT INTO series (server_id, metric, labels, labels_hash)"
            " SELECT $1, m, l::jsonb, h FROM unnest($2::text[], $3::text[], $4::bytea[])"
            " AS u(m, l, h) ON CONFLICT (labels_hash) DO NOTHING",
            server_id,
            [s.name for s in series],
            [json.dumps(dict(s.labels)) for s in series],
            keys,
        )
        rows = await conn.fetch(
            "SELECT id, labels_hash FROM series WHERE labels_hash = ANY($1::bytea[])", keys
        )
        ids = {bytes(r["labels_hash"]): r["id"] for r in rows}
        records = [
            (ids[key], datetime.fromtimestamp(t, UTC), v)
            for key, s in zip(keys, series, strict=True)
            for t, v in zip(s.timestamps, s.values, strict=True)
        ]
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bulk_stage (LIKE samples) ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table(
            "bulk_stage", records=records, columns=["series_id", "ts", "value"]
        )
        stored = await conn.execute(
            "INSERT INTO samples SELECT * FROM bulk_stage ON CONFLICT DO NOTHING"
        )
    return BulkResult(len(series), int(stored.split()[-1]))
