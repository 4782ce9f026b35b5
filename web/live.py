"""One WebSocket per browser tab; every scrape pushes that server's new figures to it.

A page may also watch one server (``{"watch": id}``, the detail page): it then gets that
server's chart points (web/charts.py) with each scrape, on the same socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from vpsmon.collector.head import ServerState
from vpsmon.collector.live import summarize
from vpsmon.web.charts import live_point

log = logging.getLogger("vpsmon.web.live")

# A browser that cannot keep up loses updates instead of growing our memory.
MAX_QUEUED = 256


@dataclass(eq=False)
class Client:
    queue: asyncio.Queue[str]
    # The servers this socket's user may see (None = all), re-read by the socket's handler.
    visible: frozenset[int] | None = frozenset()
    watching: set[int] = field(default_factory=set)

    def sees(self, server_id: int) -> bool:
        return self.visible is None or server_id in self.visible


class LiveHub:
    """Fans each scrape out to the sockets whose user may see that server.

    ``extra(server_id)`` adds figures computed beside the head (monthly traffic). Every socket
    carries its user's visible server ids (None = all); the socket's handler re-reads them
    every ``recheck_seconds``, so a revoked grant stops the updates within that.
    """

    def __init__(
        self,
        extra: Callable[[int], dict[str, Any]] | None = None,
        recheck_seconds: float = 10.0,
    ) -> None:
        self._extra = extra
        self._clients: weakref.WeakKeyDictionary[web.WebSocketResponse, Client] = (
            weakref.WeakKeyDictionary()
        )
        self.dropped = 0
        self.recheck_seconds = recheck_seconds

    def register(
        self, ws: web.WebSocketResponse, visible: frozenset[int] | None
    ) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED)
        self._clients[ws] = Client(queue, visible)
        return queue

    def set_visible(self, ws: web.WebSocketResponse, visible: frozenset[int] | None) -> None:
        client = self._clients.get(ws)
        if client is not None:
            client.visible = visible
            client.watching = {sid for sid in client.watching if client.sees(sid)}

    def unregister(self, ws: web.WebSocketResponse) -> None:
        self._clients.pop(ws, None)

    def watch(self, ws: web.WebSocketResponse, server_id: int) -> None:
        """Send this socket the charts' points of ``server_id`` (one server at a time)."""
        client = self._clients.get(ws)
        if client is not None and client.sees(server_id):
            client.watching = {server_id}

    def _put(self, client: Client, message: str) -> None:
        try:
            client.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    def publish(self, state: ServerState) -> None:
        clients = [c for c in self._clients.values() if c.sees(state.server_id)]
        if not clients:
            return
        summary = summarize(state)
        if self._extra is not None:
            summary.update(self._extra(state.server_id))
        message = json.dumps({"type": "server", "server": summary})
        point_message: str | None = None
        for client in clients:
            self._put(client, message)
            if state.server_id in client.watching:
                if point_message is None:
                    point = live_point(state)
                    point_message = json.dumps(
                        {"type": "point", "id": state.server_id, "point": point}
                    )
                self._put(client, point_message)

    def broadcast(self, message: str, server_id: int | None = None) -> None:
        """A message for every open page (a record added, changed or removed); when it is
        about one server, only for the pages whose user may see that server."""
        for client in list(self._clients.values()):
            if server_id is None or client.sees(server_id):
                self._put(client, message)

    async def close_all(self) -> None:
        for ws in list(self._clients):
            await ws.close(code=1001, message=b"server shutting down")


def snapshot_message(servers: list[dict[str, Any]]) -> str:
    return json.dumps({"type": "snapshot", "servers": servers})
