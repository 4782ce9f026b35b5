"""Small builders shared by the notify tests."""

from __future__ import annotations

from typing import Any

import asyncpg

from vpsmon.collector.notify import store
from vpsmon.collector.notify.alerts import format_time
from vpsmon.collector.notify.outbox import OutboxWorker
from vpsmon.collector.notify.store import Channel


def alert(
    name: str, instance: str = "web-1:9190", *, ends: float | None = None, **labels: str
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels": {"alertname": name, "instance": instance, **labels},
        "annotations": {"summary": f"{name} on {instance}"},
        "generatorURL": "http://collector/rules",
    }
    if ends is not None:
        out["endsAt"] = format_time(ends)
    return out


async def add_channel(
    pool: asyncpg.Pool, name: str, kind: str, settings: dict[str, Any], **fields: Any
) -> int:
    return await store.save_channel(pool, Channel(0, name, kind, settings, **fields))


async def deliver(worker: OutboxWorker, now: float) -> None:
    await worker.poll(now)
    await worker.idle()


async def outbox(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM notify_outbox ORDER BY id")
