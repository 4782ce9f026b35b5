"""Server records: what the UI lists and the collector scrapes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from vpsmon.collector.config import StaticTarget
from vpsmon.collector.scrape.target import Target


@dataclass(frozen=True)
class Server:
    id: int
    name: str
    url: str
    group_name: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "group": self.group_name,
            "tags": list(self.tags),
            "labels": dict(self.labels),
        }


def _row(row: asyncpg.Record) -> Server:
    return Server(
        row["id"],
        row["name"],
        row["url"],
        row["group_name"],
        tuple(row["tags"]),
        json.loads(row["labels"]),
    )


async def list_servers(pool: asyncpg.Pool) -> list[Server]:
    rows = await pool.fetch(
        "SELECT id, name, url, group_name, tags, labels FROM servers ORDER BY name, id"
    )
    return [_row(r) for r in rows]


async def upsert_static(pool: asyncpg.Pool, targets: Iterable[StaticTarget]) -> None:
    """Static targets from collector.yml become server records (matched by URL)."""
    async with pool.acquire() as conn, conn.transaction():
        for t in targets:
            await conn.execute(
                "INSERT INTO servers (name, url, labels) VALUES ($1, $2, $3::jsonb)"
                " ON CONFLICT (url) DO UPDATE SET name = EXCLUDED.name, labels = EXCLUDED.labels",
                t.name,
                t.url,
                json.dumps(dict(t.labels)),
            )


def to_targets(servers: Iterable[Server], interval: float, timeout: float) -> list[Target]:
    return [Target(s.id, s.name, s.url, interval, timeout, dict(s.labels)) for s in servers]
