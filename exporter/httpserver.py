"""A small HTTP/1.1 server on asyncio streams, for the exporter's few GET endpoints.

Why not aiohttp, which the collector uses: importing aiohttp.web costs ~17 MiB resident, and
that alone broke the exporter's memory budget (within 2x node_exporter's, issue #3; see
docs/benchmarks.md). The exporter serves pre-rendered bytes from memory, so what it needs of
HTTP is small: GET and HEAD, keep-alive, Content-Length bodies (RFC 9112), the handler choosing
gzip. Prometheus, curl, browsers and aiohttp's client all speak this subset.

Limits, so no client can hold resources: the request line and headers at most 16 KiB and 100
headers, read within `header_timeout`; an idle kept-alive connection is closed after
`idle_timeout`; request bodies are refused; at most `max_connections` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

log = logging.getLogger("vpsmon.exporter")

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]  # the first value of each parameter
    headers: Mapping[str, str]  # names lower-cased
    remote: str | None


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(ValueError):
    """A request we refuse to parse; the message is sent back with `status`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes, remote: str | None) -> tuple[Request, bool]:
    """The request and whether the client wants the connection kept open."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    method, target, version = parts
    if not target.startswith("/"):
        raise BadRequest("the request target must be a path")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest("malformed header line")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if len(headers) > MAX_HEADERS:
        raise BadRequest("too many headers", 431)
    if "transfer-encoding" in headers or headers.get("content-length", "0").strip() != "0":
        raise BadRequest("request bodies are not accepted", 413)
    path, _, raw_query = target.partition("?")
    query: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(raw_query, keep_blank_values=True):
        query.setdefault(key, value)
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.1":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection
    return Request(method, urllib.parse.unquote(path), query, headers, remote), keep_alive


def encode_head(response: Response, body_length: int, keep_alive: bool) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    lines.append(f"Content-Length: {body_length}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HTTPServer:
    def __init__(
        self,
        handler: Handler,
        *,
        max_connections: int = 256,
        header_timeout: float = 10.0,
        idle_timeout: float = 75.0,
    ) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self, sock: socket.socket, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            sock=sock,
            ssl=ssl_context,
            ssl_handshake_timeout=self.header_timeout if ssl_context else None,
            limit=MAX_HEAD_BYTES,
        )

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            writer.close()  # bounded: a flood of connections cannot grow memory
            return
        self._connections.add(writer)
        peer = writer.get_extra_info("peername")
        remote = str(peer[0]) if isinstance(peer, tuple) and peer else None
        try:
            keep_alive = True
            first = True
            while keep_alive:
                head = await self._read_head(reader, first)
                if head is None:
                    return
                first = False
                try:
                    request, keep_alive = parse_head(head, remote)
                except BadRequest as err:
                    await self._send(writer, Response(err.status, f"{err}\n".encode()), False)
                    return
                if request.method not in ("GET", "HEAD"):
                    response = Response(405, b"only GET and HEAD\n", {"Allow": "GET, HEAD"})
                else:
                    try:
                        response = await self.handler(request)
                    except Exception:
                        log.exception("request failed path=%s", request.path)
                        response, keep_alive = Response(500, b"internal error\n"), False
                await self._send(writer, response, keep_alive, head_only=request.method == "HEAD")
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return  # the client went away or spoke nonsense; nothing to answer
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_head(self, reader: asyncio.StreamReader, first: bool) -> bytes | None:
        """The request head, or None when the client closed, idled or sent too much."""
        try:
            # A kept-alive connection may idle between scrapes; a new one must speak soon.
            start = await asyncio.wait_for(
                reader.readexactly(1), self.header_timeout if first else self.idle_timeout
            )
            rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.header_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return None
        return start + rest[:-4]

    async def _send(
        self, writer: asyncio.StreamWriter, response: Response, keep_alive: bool, *,
        head_only: bool = False,
    ) -> None:  # fmt: skip
        response.headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        writer.write(encode_head(response, len(response.body), keep_alive))
        if not head_only:
            writer.write(response.body)
        await writer.drain()
