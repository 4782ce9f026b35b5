"""A local HTTP server that records what chat services and webhooks would receive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.conftest import free_port


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


Responder = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """Records every request; `responder` decides the answer (200 {} by default)."""

    responder: Responder | None = None
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode()
        self.requests.append(
            Received(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        self.arrived.set()
        if self.responder is not None:
            return await self.responder(request, body)
        return web.json_response({})

    async def wait_for(self, count: int, within: float) -> None:
        """Until `count` requests arrived; TimeoutError after `within` seconds."""
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
