"""One WebSocket per browser tab; every scrape pushes that server's new figures to it.

A page may also watch one server (``{"watch": id}``, the detail page): it then gets that
server's chart points (web/charts.py) with each scrape, on the same socket.
"""

from __future__ import annotations

import asyncio
import collections
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


class Outbox:
    """What one socket still has to send.

    A server's figures are coalesced: only its newest summary waits, so a burst of scrapes
    (every server at once) costs one entry per server and loses nothing that still matters,
    and the pending summaries go out as one ``servers`` message. Other messages (snapshots,
    chart points, record changes) queue in order, at most MAX_QUEUED; more are dropped and
    counted.
    """

    def __init__(self) -> None:
        self._latest: dict[int, str] = {}
        self._other: collections.deque[str] = collections.deque()
        self._ready = asyncio.Event()
        self.dropped = 0

    def put_server(self, server_id: int, summary_json: str) -> None:
        self._latest.pop(server_id, None)  # re-insert: keep the order of arrival
        self._latest[server_id] = summary_json
        self._ready.set()

    def put_nowait(self, message: str) -> None:
        if len(self._other) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._other.append(message)
        self._ready.set()

    async def put(self, message: str) -> None:
        self.put_nowait(message)

    async def get(self) -> str:
        while not self._latest and not self._other:
            self._ready.clear()
            await self._ready.wait()
        if self._latest:
            batch, self._latest = list(self._latest.values()), {}
            if len(batch) == 1:
                return '{"type": "server", "server": ' + batch[0] + "}"
            return '{"type": "servers", "servers": [' + ",".join(batch) + "]}"
        return self._other.popleft()


@dataclass(eq=False)
class Client:
    queue: Outbox
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
        # server id -> (what the summary was computed from, summary): pages and the socket's
        # snapshots reuse the figures of the last scrape instead of recomputing 500 of them.
        self._summaries: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def summary(self, state: ServerState) -> dict[str, Any]:
        """``summarize(state)``, computed once per scrape; a copy the caller may extend."""
        key = (state.last_scrape, state.up, state.error, id(state.current), id(state.previous))
        cached = self._summaries.get(state.server_id)
        if cached is None or cached[0] != key:
            cached = (key, summarize(state))
            self._summaries[state.server_id] = cached
        return dict(cached[1])

    def forget(self, server_id: int) -> None:
        self._summaries.pop(server_id, None)

    def register(self, ws: web.WebSocketResponse, visible: frozenset[int] | None) -> Outbox:
        queue = Outbox()
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
        before = client.queue.dropped
        client.queue.put_nowait(message)
        self.dropped += client.queue.dropped - before

    def publish(self, state: ServerState) -> None:
        clients = [c for c in self._clients.values() if c.sees(state.server_id)]
        if not clients:
            return
        summary = self.summary(state)
        if self._extra is not None:
            summary.update(self._extra(state.server_id))
        summary_json = json.dumps(summary)
        point_message: str | None = None
        for client in clients:
            client.queue.put_server(state.server_id, summary_json)
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
