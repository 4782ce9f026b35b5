"""The exporter's HTTP side: /metrics from the pre-rendered payload, collection in background,
/history from the history buffer, optional TLS and access control (issue #3).

Served by exporter/httpserver.py rather than aiohttp, to stay within the memory budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import html
import logging
import socket
import ssl
import time
from typing import Any

from vpsmon import __version__
from vpsmon.config import HostPort
from vpsmon.exporter import exposition, history
from vpsmon.exporter.collection import Collection, Payload
from vpsmon.exporter.collectors import by_name
from vpsmon.exporter.collectors.base import Context
from vpsmon.exporter.config import ExporterConfig
from vpsmon.exporter.history import History, HistoryQueryError
from vpsmon.exporter.httpserver import HTTPServer, Request, Response
from vpsmon.exporter.security import (
    AccessPolicy,
    CertificatePaths,
    RefusalLog,
    ensure_self_signed,
    server_ssl_context,
)

log = logging.getLogger("vpsmon.exporter")

METRICS_HEADERS = {"Content-Type": exposition.CONTENT_TYPE}


class Exporter:
    """The collection, its latest payload, the history buffer and who may read them.

    Made by `Exporter(config)` (which runs the first collection, so the first scrape has
    data), started with `await start(sock)`, stopped with `await close()`.
    """

    def __init__(self, config: ExporterConfig, context: Context | None = None) -> None:
        table = by_name()
        self.config = config
        self.collection = Collection(
            [table[name] for name in config.enabled], context or Context(options=config.options)
        )
        self.history = History(config.history_retention, config.history_max_samples)
        self.access = AccessPolicy(config.bearer_tokens, config.allow)
        self.refusals = RefusalLog()
        self.payload: Payload = self.collection.collect_once(None, self.history.families())
        self.history.record(self.payload.families, self.payload.collected_at)
        self.http = HTTPServer(self.handle)
        self._loop_task: asyncio.Task[None] | None = None
        self._command: Any = None  # grpc.aio.Server when a management feature is enabled

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self, sock: socket.socket, ssl_context: ssl.SSLContext | None = None) -> None:
        if self.config.command.enabled:
            # Imported only here: a metrics-only exporter never loads grpcio (docs/benchmarks.md).
            from vpsmon.exporter.command.server import start_command_server

            self._command = await start_command_server(self.config, identity(self.config))
        await self.http.start(sock, ssl_context)
        self._loop_task = asyncio.create_task(self.collect_loop())

    async def close(self) -> None:
        if self._command is not None:
            await self._command.stop(grace=2)
            self._command.agent_service.close()
            self._command = None
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self.http.close()
        self.collection.close()

    async def collect_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval
        while True:
            # Align to the interval grid so samples land on round timestamps.
            await asyncio.sleep(interval - (time.time() % interval))
            own = self.history.families()
            try:
                payload = await loop.run_in_executor(None, self.collection.collect_once, None, own)
            except Exception:  # never let the loop die; the next round tries again
                log.exception("collection failed")
                continue
            self.payload = payload
            self.history.record(payload.families, payload.collected_at)

    # ------------------------------------------------------------ requests

    async def handle(self, request: Request) -> Response:
        # Every path, not only /metrics and /history: the index names the collectors and the
        # version, which an exporter that asked for access control should not tell strangers.
        decision = self.access.check(request.remote, request.headers.get("authorization"))
        if not decision.allowed:
            return self.refuse(request, decision.status, decision.reason)
        if request.path == "/metrics":
            return self.metrics(request)
        if request.path == "/history":
            return await self.history_page(request)
        if request.path == "/":
            return self.index()
        return Response(404, b"not found: try /metrics\n")

    def refuse(self, request: Request, status: int, reason: str) -> Response:
        remote = request.remote or "unknown"
        if self.refusals.should_log(remote, time.monotonic()):
            log.warning(
                "refused request address=%s path=%s status=%d reason=%r",
                remote,
                request.path,
                status,
                reason,
            )
        headers = {"WWW-Authenticate": 'Bearer realm="vpsmon exporter"'} if status == 401 else {}
        return Response(status, (reason + "\n").encode(), headers)

    def metrics(self, request: Request) -> Response:
        payload = self.payload
        if accepts_gzip(request):
            return Response(200, payload.gzipped, {**METRICS_HEADERS, "Content-Encoding": "gzip"})
        return Response(200, payload.text, dict(METRICS_HEADERS))

    async def history_page(self, request: Request) -> Response:
        try:
            since, until = history.parse_range(
                request.query.get("since"), request.query.get("until")
            )
        except HistoryQueryError as err:
            return Response(400, f"{err}\n".encode())
        snapshots = self.history.snapshots()
        zipped = accepts_gzip(request)

        # An hour of samples takes a moment to render; do it off the event loop so /metrics
        # scrapes are not held up. Snapshots are immutable, so the copy is safe to read there.
        def render() -> bytes:
            body = history.render(snapshots, since, until).encode()
            return gzip.compress(body, compresslevel=5) if zipped else body

        body = await asyncio.get_running_loop().run_in_executor(None, render)
        headers = dict(METRICS_HEADERS)
        if zipped:
            headers["Content-Encoding"] = "gzip"
        return Response(200, body, headers)

    def index(self) -> Response:
        names = html.escape(", ".join(self.collection.names))
        body = (
            "<!doctype html><title>vpsmon exporter</title>"
            f"<h1>vpsmon exporter {__version__}</h1><p><a href='/metrics'>Metrics</a></p>"
            "<p><a href='/history?since=0'>History</a></p>"
            f"<p>Collectors: {names}</p>"
        )
        return Response(200, body.encode(), {"Content-Type": "text/html; charset=utf-8"})


def accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


def identity(config: ExporterConfig) -> CertificatePaths:
    """The exporter's certificate and key: tls.cert_file/key_file, else the pair it made."""
    tls = config.tls
    if tls.cert_file is not None and tls.key_file is not None:
        return CertificatePaths(tls.cert_file, tls.key_file)
    return ensure_self_signed(config.resolved_state_dir())


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


async def serve(config: ExporterConfig, context: Context | None = None) -> Exporter:
    """Start the exporter on config.listen (HTTPS when TLS is configured)."""
    tls = ssl_context(config)
    # Bind before the first collection: a busy port is then the one and only thing said,
    # not preceded by what the collectors found (a missing dockerd, say).
    sock = bind(config.listen)
    try:
        exporter = Exporter(config, context)
        await exporter.start(sock, tls)
    except BaseException:
        sock.close()
        raise
    return exporter


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
