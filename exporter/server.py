"""The exporter's HTTP server: /metrics from the pre-rendered payload, collection in background,
/history from the history buffer, optional TLS and access control (issue #3)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from vpsmon import __version__
from vpsmon.config import HostPort
from vpsmon.exporter import exposition, history
from vpsmon.exporter.collection import Collection, Payload
from vpsmon.exporter.collectors import by_name
from vpsmon.exporter.collectors.base import Context
from vpsmon.exporter.config import ExporterConfig
from vpsmon.exporter.history import History, HistoryQueryError
from vpsmon.exporter.security import (
    AccessPolicy,
    CertificatePaths,
    RefusalLog,
    ensure_self_signed,
    server_ssl_context,
)

log = logging.getLogger("vpsmon.exporter")

COLLECTION = web.AppKey("collection", Collection)
PAYLOAD = web.AppKey("payload", list)  # one-element holder, replaced atomically
HISTORY = web.AppKey("history", History)
ACCESS = web.AppKey("access", AccessPolicy)
REFUSALS = web.AppKey("refusals", RefusalLog)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(config: ExporterConfig, context: Context | None = None) -> web.Application:
    table = by_name()
    context = context or Context(options=config.options)
    collection = Collection([table[name] for name in config.enabled], context)
    app = web.Application(middlewares=[access_control])
    app[COLLECTION] = collection
    app[HISTORY] = History(config.history_retention, config.history_max_samples)
    app[ACCESS] = AccessPolicy(config.bearer_tokens, config.allow)
    app[REFUSALS] = RefusalLog()
    first = collection.collect_once(None, app[HISTORY].families())
    app[PAYLOAD] = [first]
    app[HISTORY].record(first.families, first.collected_at)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/history", handle_history)
    app.router.add_get("/", handle_index)
    app.cleanup_ctx.append(_collect_in_background(config.interval))
    app.on_cleanup.append(_close_collection)
    return app


async def _close_collection(app: web.Application) -> None:
    app[COLLECTION].close()


def ssl_context(config: ExporterConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP (the default).

    With `tls.auto` the key pair and certificate are made in state_dir on the first start.
    """
    tls = config.tls
    if tls.cert_file is not None and tls.key_file is not None:
        return server_ssl_context(CertificatePaths(tls.cert_file, tls.key_file))
    if tls.auto:
        return server_ssl_context(ensure_self_signed(config.resolved_state_dir()))
    return None


async def serve(config: ExporterConfig, app: web.Application | None = None) -> web.AppRunner:
    """Start the exporter on config.listen (HTTPS when TLS is configured)."""
    context = ssl_context(config)
    # Bind before the first collection: a busy port is then the one and only thing said,
    # not preceded by what the collectors found (a missing dockerd, say).
    sock = bind(config.listen)
    try:
        runner = web.AppRunner(app or create_app(config), access_log=None, handle_signals=False)
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=context).start()
    except BaseException:
        sock.close()
        raise
    return runner


def bind(listen: HostPort) -> socket.socket:
    """A listening socket on HOST:PORT (dual-stack for ::), or an OSError saying which."""
    try:
        infos = socket.getaddrinfo(
            listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise OSError(err.errno, f"cannot listen on {listen}: {err.strerror or err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"cannot listen on {listen}: {err.strerror or err}") from None
    return sock


@web.middleware
async def access_control(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Every path, not only /metrics and /history: the index names the collectors and the
    # version, which an exporter that asked for access control should not tell strangers.
    decision = request.app[ACCESS].check(request.remote, request.headers.get("Authorization"))
    if decision.allowed:
        return await handler(request)
    remote = request.remote or "unknown"
    if request.app[REFUSALS].should_log(remote, time.monotonic()):
        log.warning(
            "refused request address=%s path=%s status=%d reason=%r",
            remote,
            request.path,
            decision.status,
            decision.reason,
        )
    headers = {"WWW-Authenticate": 'Bearer realm="vpsmon exporter"'}
    return web.Response(
        status=decision.status,
        text=decision.reason + "\n",
        headers=headers if decision.status == 401 else None,
    )


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
            own = app[HISTORY].families()
            payload: Payload = await loop.run_in_executor(None, collection.collect_once, None, own)
        except Exception:  # never let the loop die; the next round tries again
            log.exception("collection failed")
            continue
        app[PAYLOAD][0] = payload
        app[HISTORY].record(payload.families, payload.collected_at)


async def handle_metrics(request: web.Request) -> web.Response:
    payload: Payload = request.app[PAYLOAD][0]
    headers = {"Content-Type": exposition.CONTENT_TYPE}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=payload.gzipped, headers=headers)
    return web.Response(body=payload.text, headers=headers)


async def handle_history(request: web.Request) -> web.Response:
    try:
        since, until = history.parse_range(request.query.get("since"), request.query.get("until"))
    except HistoryQueryError as err:
        return web.Response(status=400, text=f"{err}\n")
    snapshots = request.app[HISTORY].snapshots()
    # An hour of samples takes a moment to render; do it off the event loop so /metrics
    # scrapes are not held up. Snapshots are immutable, so the copy is safe to read there.
    loop = asyncio.get_running_loop()
    text = await loop.run_in_executor(None, history.render, snapshots, since, until)
    headers = {"Content-Type": exposition.CONTENT_TYPE}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        # Let aiohttp compress: the body is made per request, unlike /metrics' payload.
        response = web.Response(body=text.encode(), headers=headers)
        response.enable_compression()
        return response
    return web.Response(body=text.encode(), headers=headers)


async def handle_index(request: web.Request) -> web.Response:
    names = ", ".join(request.app[COLLECTION].names)
    body = (
        "<!doctype html><title>vpsmon exporter</title>"
        f"<h1>vpsmon exporter {__version__}</h1><p><a href='/metrics'>Metrics</a></p>"
        "<p><a href='/history?since=0'>History</a></p>"
        f"<p>Collectors: {names}</p>"
    )
    return web.Response(text=body, content_type="text/html")
