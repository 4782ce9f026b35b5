"""One bounded HTTP GET of an exporter: timeout, body size limit (after gzip), TLS, bearer."""

from __future__ import annotations

import asyncio
import ssl
import zlib

import aiohttp

from vpsmon.collector.scrape.security import (
    ScrapeSetupError,
    SSLSetting,
    authorization,
    fingerprint_mismatch,
)
from vpsmon.collector.scrape.target import Target

ACCEPT = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"


class FetchError(Exception):
    """Why a fetch failed, worded for the targets list."""


class BodyTooLarge(Exception):
    pass


async def fetch_body(
    session: aiohttp.ClientSession,
    target: Target,
    url: str,
    *,
    ssl_setting: SSLSetting,
    body_size_limit: int,
    timeout: float,  # noqa: ASYNC109 (per call: a scrape and a history window differ)
    params: dict[str, str] | None = None,
) -> bytes:
    try:
        headers = {"Accept": ACCEPT, "Accept-Encoding": "gzip"}
        token = authorization(target)
        if token is not None:
            headers["Authorization"] = token
        async with asyncio.timeout(timeout):
            async with session.get(
                url,
                params=params,
                headers=headers,
                auto_decompress=False,
                ssl=ssl_setting,
                server_hostname=target.tls.server_name,
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    raise FetchError(f"server returned HTTP status {resp.status} {resp.reason}")
                return await _read_limited(resp, body_size_limit)
    except ScrapeSetupError as err:
        raise FetchError(str(err)) from None
    except TimeoutError:
        raise FetchError(f"timed out after {timeout:g}s") from None
    except BodyTooLarge:
        raise FetchError(f"body size limit of {body_size_limit} bytes exceeded") from None
    except aiohttp.ServerFingerprintMismatch as err:
        raise FetchError(fingerprint_mismatch(err)) from None
    except aiohttp.ClientConnectorCertificateError as err:
        raise FetchError(f"TLS certificate not trusted: {err.certificate_error}") from None
    except aiohttp.ClientError as err:
        raise FetchError(f"connection failed: {err or type(err).__name__}") from None
    except ssl.SSLError as err:
        raise FetchError(f"TLS failed: {err.reason or err}") from None
    except OSError as err:
        raise FetchError(f"connection failed: {err.strerror or err}") from None
    except zlib.error:
        raise FetchError("invalid gzip body") from None


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read the body, decompressing gzip ourselves so the limit applies to the inflated size."""
    encoding = resp.headers.get("Content-Encoding", "").lower().strip()
    if encoding not in ("", "identity", "gzip"):
        raise FetchError(f"unsupported Content-Encoding {encoding[:40]!r} (gzip was asked for)")
    gzipped = encoding == "gzip"
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        if inflater is not None:
            chunk = inflater.decompress(chunk, limit - size + 1)
            if inflater.unconsumed_tail:
                raise BodyTooLarge()
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)
