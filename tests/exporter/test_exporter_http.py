"""The exporter's small HTTP/1.1 server (exporter/httpserver.py), spoken to over raw sockets."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest

from vpsmon.config import HostPort
from vpsmon.exporter.config import load_config
from vpsmon.exporter.httpserver import HTTPServer, Request, Response
from vpsmon.exporter.server import bind, serve


async def echo(request: Request) -> Response:
    body = f"{request.method} {request.path} {dict(request.query)} {request.remote}\n"
    return Response(200, body.encode())


@pytest.fixture
async def server() -> AsyncIterator[HTTPServer]:
    http = HTTPServer(echo, max_connections=3, header_timeout=0.5, idle_timeout=1.0)
    await http.start(bind(HostPort("127.0.0.1", 0)))
    try:
        yield http
    finally:
        await http.close()


async def exchange(port: int, raw: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (fails on a hang)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), read_timeout)
    except ConnectionResetError:
        return b""  # closed by the server before it read what we sent
    finally:
        writer.close()


def responses(data: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """Split a byte stream of HTTP responses (all with Content-Length)."""
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        found.append((lines[0], headers, rest[:length]))
        data = rest[length:]
    return found


async def test_two_requests_on_one_kept_alive_connection_are_both_answered(
    server: HTTPServer,
) -> None:
    raw = (
        b"GET /metrics?since=5&since=6 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /history HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    got = responses(await exchange(server.port, raw))
    assert [(status, body) for status, _, body in got] == [
        ("HTTP/1.1 200 OK", b"GET /metrics {'since': '5'} 127.0.0.1\n"),
        ("HTTP/1.1 200 OK", b"GET /history {} 127.0.0.1\n"),
    ]
    assert [h["connection"] for _, h, _ in got] == ["keep-alive", "close"]


async def test_head_has_the_length_but_no_body(server: HTTPServer) -> None:
    data = await exchange(server.port, b"HEAD /x HTTP/1.1\r\nConnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 21" in head
    assert body == b""


async def test_http_1_0_without_keep_alive_is_closed_after_the_answer(server: HTTPServer) -> None:
    got = responses(await exchange(server.port, b"GET / HTTP/1.0\r\n\r\n"))
    assert got[0][0] == "HTTP/1.1 200 OK" and got[0][1]["connection"] == "close"


@pytest.mark.parametrize(
    ("raw", "status", "extra"),
    [
        (b"POST /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", "405 Method Not Allowed", "allow"),
        (
            b"GET /m HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "413 Request Entity Too Large",
            None,
        ),
        (
            b"GET /m HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "413 Request Entity Too Large",
            None,
        ),
        (b"NONSENSE\r\n\r\n", "400 Bad Request", None),
        (b"GET http://evil/ HTTP/1.1\r\n\r\n", "400 Bad Request", None),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "400 Bad Request", None),
    ],
)
async def test_requests_we_do_not_serve_get_a_clear_status(
    server: HTTPServer, raw: bytes, status: str, extra: str | None
) -> None:
    got = responses(await exchange(server.port, raw))
    assert got[0][0] == f"HTTP/1.1 {status}"
    if extra:
        assert got[0][1][extra] == "GET, HEAD"


async def test_oversized_headers_close_the_connection(server: HTTPServer) -> None:
    raw = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert await exchange(server.port, raw) == b""


async def test_a_client_that_says_nothing_is_dropped_after_the_header_timeout(
    server: HTTPServer,
) -> None:
    assert await exchange(server.port, b"", read_timeout=5) == b""


async def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(
    server: HTTPServer,
) -> None:
    data = await exchange(server.port, b"GET / HTTP/1.1\r\n\r\n", read_timeout=5)
    assert len(responses(data)) == 1  # answered, then closed by the server when idle


async def test_connections_over_the_limit_are_closed_at_once(server: HTTPServer) -> None:
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    try:
        await asyncio.sleep(0.1)
        assert await exchange(server.port, b"GET / HTTP/1.1\r\n\r\n", read_timeout=5) == b""
    finally:
        for _, writer in held:
            writer.close()


async def test_metrics_are_gzipped_when_asked_and_identical_once_unzipped() -> None:
    config = load_config(
        None, env={}, overrides={"listen": "127.0.0.1:0", "collectors.hwmon": False}
    )
    exporter = await serve(config)
    try:
        plain = responses(
            await exchange(exporter.port, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        )[0]
        zipped = responses(
            await exchange(
                exporter.port,
                b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip, deflate\r\n"
                b"Connection: close\r\n\r\n",
            )
        )[0]
        missing = responses(await exchange(exporter.port, b"GET /nope HTTP/1.0\r\n\r\n"))[0]
    finally:
        await exporter.close()
    assert plain[1]["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert zipped[1]["content-encoding"] == "gzip"
    assert gzip.decompress(zipped[2]) == plain[2]
    assert missing[0] == "HTTP/1.1 404 Not Found"
