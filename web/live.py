"""One WebSocket per browser tab; every scrape pushes that server's new figures to it."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import Any

from aiohttp import web

from vpsmon.collector.head import ServerState
from vpsmon.collector.live import summarize

log = logging.getLogger("vpsmon.web.live")

# A browser that cannot keep up loses updates instead of growing our memory.
MAX_QUEUED = 256


class LiveHub:
    def __init__(self) -> None:
        self._queues: weakref.WeakKeyDictionary[web.WebSocketResponse, asyncio.Queue[str]] = (
            weakref.WeakKeyDictionary()
        )
        self.dropped = 0

    def register(self, ws: web.WebSocketResponse) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED)
        self._queues[ws] = queue
        return queue

    def unregister(self, ws: web.WebSocketResponse) -> None:
        self._queues.pop(ws, None)

    def publish(self, state: ServerState) -> None:
        if not self._queues:
            return
        message = json.dumps({"type": "server", "server": summarize(state)})
        for queue in list(self._queues.values()):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self.dropped += 1

    async def close_all(self) -> None:
        for ws in list(self._queues):
            await ws.close(code=1001, message=b"server shutting down")


def snapshot_message(servers: list[dict[str, Any]]) -> str:
    return json.dumps({"type": "snapshot", "servers": servers})
