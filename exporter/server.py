"""The exporter's HTTP server: /metrics from the pre-rendered payload, collection in background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from vpsmon import __version__
from vpsmon.exporter import exposition
from vpsmon.exporter.collection import Collection, Payload
from vpsmon.exporter.collectors import by_name
from vpsmon.exporter.collectors.base import Context
from vpsmon.exporter.config import ExporterConfig

log = logging.getLogger("vpsmon.exporter")

COLLECTION = web.AppKey("collection", Collection)
PAYLOAD = web.AppKey("payload", list)  # one-element holder, replaced atomically


def create_app(config: ExporterConfig, context: Context | None = None) -> web.Application:
    table = by_name()
    context = context or Context(options=config.options)
    collection = Collection([table[name] for name in config.enabled], context)
    app = web.Application()
    app[COLLECTION] = collection
    app[PAYLOAD] = [collection.collect_once()]
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/", handle_index)
    app.cleanup_ctx.append(_collect_in_background(config.interval))
    return app


def _collect_in_background(
    interval: float,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(collect_loop(app, interval))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


async def collect_loop(app: web.Application, interval: float) -> None:
    loop = asyncio.get_running_loop()
    collection = app[COLLECTION]
    while True:
        # Align to the interval grid so samples land on round timestamps.
        await asyncio.sleep(interval - (time.time() % interval))
        try:
            payload: Payload = await loop.run_in_executor(None, collection.collect_once)
        except Exception:  # never let the loop die; the next round tries again
            log.exception("collection failed")
            continue
        app[PAYLOAD][0] = payload


async def handle_metrics(request: web.Request) -> web.Response:
    payload: Payload = request.app[PAYLOAD][0]
    headers = {"Content-Type": exposition.CONTENT_TYPE}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=payload.gzipped, headers=headers)
    return web.Response(body=payload.text, headers=headers)


async def handle_index(request: web.Request) -> web.Response:
    names = ", ".join(request.app[COLLECTION].names)
    body = (
        "<!doctype html><title>vpsmon exporter</title>"
        f"<h1>vpsmon exporter {__version__}</h1><p><a href='/metrics'>Metrics</a></p>"
        f"<p>Collectors: {names}</p>"
    )
    return web.Response(text=body, content_type="text/html")
