"""The scrape loop: one asyncio task per target, each calling `scrape_once`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import aiohttp

from vpsmon.collector.scrape.parse import ParseError, Sample, parse_exposition
from vpsmon.collector.scrape.target import Target

log = logging.getLogger("vpsmon.scrape")

ACCEPT = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    target: Target
    timestamp: float  # when the scrape started (seconds since the epoch)
    duration: float
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    @property
    def up(self) -> bool:
        return self.error is None

    def with_synthetic(self) -> list[Sample]:
        """The scraped samples plus up, scrape_duration_seconds, scrape_samples_scraped."""
        return [
            *self.samples,
            Sample("up", (), 1.0 if self.up else 0.0),
            Sample("scrape_duration_seconds", (), self.duration),
            Sample("scrape_samples_scraped", (), float(len(self.samples))),
        ]


OnScrape = Callable[[ScrapeResult], Awaitable[None]]


async def scrape_once(
    session: aiohttp.ClientSession,
    target: Target,
    now: float,
    *,
    body_size_limit: int,
    sample_limit: int,
) -> ScrapeResult:
    started = time.perf_counter()

    def failed(reason: str) -> ScrapeResult:
        return ScrapeResult(target, now, time.perf_counter() - started, [], reason)

    try:
        async with asyncio.timeout(target.timeout):
            async with session.get(
                target.url,
                headers={"Accept": ACCEPT, "Accept-Encoding": "gzip"},
                auto_decompress=False,
            ) as resp:
                if resp.status != 200:
                    return failed(f"server returned HTTP status {resp.status} {resp.reason}")
                body = await _read_limited(resp, body_size_limit)
    except TimeoutError:
        return failed(f"timed out after {target.timeout:g}s")
    except BodyTooLarge:
        return failed(f"body size limit of {body_size_limit} bytes exceeded")
    except aiohttp.ClientError as err:
        return failed(f"connection failed: {err or type(err).__name__}")
    except OSError as err:
        return failed(f"connection failed: {err.strerror or err}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return failed("invalid exposition: body is not UTF-8")
    try:
        samples = (
            await asyncio.to_thread(parse_exposition, text, sample_limit)
            if len(body) > 256 * 1024
            else parse_exposition(text, sample_limit)
        )
    except ParseError as err:
        return failed(str(err))
    return ScrapeResult(target, now, time.perf_counter() - started, samples)


class BodyTooLarge(Exception):
    pass


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read the body, decompressing gzip ourselves so the limit applies to the inflated size."""
    gzipped = resp.headers.get("Content-Encoding", "").lower() == "gzip"
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


class Scraper:
    """Keeps one task per target and hands every result to the `on_scrape` callbacks."""

    def __init__(
        self, on_scrape: Iterable[OnScrape], *, body_size_limit: int, sample_limit: int
    ) -> None:
        self._on_scrape = list(on_scrape)
        self._body_size_limit = body_size_limit
        self._sample_limit = sample_limit
        self._tasks: dict[int, tuple[Target, asyncio.Task[None]]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Scraper:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.sync([])
        if self._session is not None:
            await self._session.close()

    @property
    def targets(self) -> list[Target]:
        return [t for t, _ in self._tasks.values()]

    async def sync(self, targets: Iterable[Target]) -> None:
        """Start tasks for new or changed targets; stop those that are gone."""
        wanted = {t.server_id: t for t in targets}
        for server_id, (target, task) in list(self._tasks.items()):
            if wanted.get(server_id) != target:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                del self._tasks[server_id]
        for server_id, target in wanted.items():
            if server_id not in self._tasks:
                task = asyncio.create_task(self._run(target), name=f"scrape {target.url}")
                self._tasks[server_id] = (target, task)

    async def _run(self, target: Target) -> None:
        assert self._session is not None
        offset = target.offset()
        while True:
            now = time.time()
            # Next slot on this target's own grid: k * interval + offset.
            wait = (offset - now) % target.interval
            await asyncio.sleep(wait)
            started = time.time()
            try:
                result = await scrape_once(
                    self._session,
                    target,
                    started,
                    body_size_limit=self._body_size_limit,
                    sample_limit=self._sample_limit,
                )
            except Exception as err:  # one target's surprise must not end its loop
                log.exception("scrape crashed target=%s", target.url)
                result = ScrapeResult(target, started, 0.0, [], f"internal error: {err!r}")
            if result.error:
                log.info("scrape failed target=%s error=%s", target.url, result.error)
            for callback in self._on_scrape:
                try:
                    await callback(result)
                except Exception:
                    log.exception("scrape consumer failed target=%s", target.url)
            # Never scrape twice in the same slot even if the consumers were quick.
            await asyncio.sleep(0.001)
