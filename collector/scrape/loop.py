"""The scrape loop: one asyncio task per target, each calling `scrape_once`.

Besides scraping, the loop keeps what Prometheus keeps per target: the series of the previous
scrape (to write staleness markers for the ones that vanish), the target's health for the
targets list, and when a gap needs backfilling from the exporter's /history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import aiohttp

from vpsmon.collector.scrape.fetch import FetchError, fetch_body
from vpsmon.collector.scrape.parse import ParseError, Sample, ScrapeCache, parse_scrape
from vpsmon.collector.scrape.result import SYNTHETIC, ScrapeResult
from vpsmon.collector.scrape.security import ScrapeSetupError, SSLSetting, ssl_for
from vpsmon.collector.scrape.status import BackfillStatus, Health, SourceStatus, TargetStatus
from vpsmon.collector.scrape.target import Labels, Target

__all__ = ["OnScrape", "ScrapeResult", "Scraper", "scrape_once", "vanished"]

log = logging.getLogger("vpsmon.scrape")

OnScrape = Callable[[ScrapeResult], Awaitable[None]]

# Bodies larger than this are parsed in a thread so the event loop keeps serving.
PARSE_IN_THREAD_BYTES = 256 * 1024


async def scrape_once(
    session: aiohttp.ClientSession,
    target: Target,
    now: float,
    *,
    body_size_limit: int,
    sample_limit: int,
    ssl_setting: SSLSetting = True,
    cache: ScrapeCache | None = None,
) -> ScrapeResult:
    started = time.perf_counter()

    def failed(reason: str) -> ScrapeResult:
        return ScrapeResult(target, now, time.perf_counter() - started, [], reason)

    try:
        body = await fetch_body(
            session,
            target,
            target.url,
            ssl_setting=ssl_setting,
            body_size_limit=body_size_limit,
            timeout=target.timeout,
        )
    except FetchError as err:
        return failed(str(err))
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return failed("invalid exposition: body is not UTF-8")
    del body
    try:
        parsed = (
            await asyncio.to_thread(parse_scrape, text, sample_limit, cache)
            if len(text) > PARSE_IN_THREAD_BYTES
            else parse_scrape(text, sample_limit, cache)
        )
    except ParseError as err:
        return failed(str(err))
    return ScrapeResult(
        target, now, time.perf_counter() - started, parsed.samples, layout=parsed.layout
    )


def vanished(previous: Sequence[Sample], current: Sequence[Sample]) -> list[tuple[str, Labels]]:
    """Series of `previous` that `current` lacks, in their previous order."""
    if len(previous) == len(current) and all(
        p.name == c.name and p.labels == c.labels for p, c in zip(previous, current, strict=True)
    ):
        return []  # the common case: an exporter sends the same series in the same order
    seen = {(s.name, s.labels) for s in current}
    out = []
    for s in previous:
        key = (s.name, s.labels)
        if key not in seen:
            seen.add(key)  # a duplicated line is marked once
            out.append(key)
    return out


class Backfill(Protocol):
    """What the scraper needs from the backfill stage (collector/scrape/backfill.py)."""

    async def gap_start(self, target: Target, last_success: float | None) -> float | None:
        """Where a gap ending now starts, or None when there is nothing to backfill."""
        ...

    async def run(
        self,
        session: aiohttp.ClientSession,
        target: Target,
        ssl_setting: SSLSetting,
        since: float,
        until: float,
        report: Callable[[BackfillStatus], None],
    ) -> None: ...


@dataclass
class TargetState:
    """What the scraper remembers of one target between scrapes (and across a restart of its
    task when its settings change)."""

    target: Target
    health: Health = "unknown"
    last_scrape: float | None = None
    last_duration: float | None = None
    last_error: str | None = None
    samples: int = 0
    # In this process: the last successful scrape, and its series for staleness.
    last_success: float | None = None
    previous: list[Sample] = field(default_factory=list)
    previous_layout: tuple[tuple[str, Labels], ...] | None = None
    had_synthetic: bool = False
    backfill: BackfillStatus | None = None
    backfill_task: asyncio.Task[None] | None = None
    # What the parser learnt of the target's series (collector/scrape/parse.py).
    cache: ScrapeCache = field(default_factory=ScrapeCache)


class Scraper:
    """Keeps one task per target and hands every result to the `on_scrape` callbacks.

    `on_store` callbacks (the writer) also get what is stored but is not a scrape: backfilled
    samples and the stale markers of removed targets; they must not be given to `on_scrape`
    as well.
    """

    def __init__(
        self,
        on_scrape: Iterable[OnScrape],
        *,
        body_size_limit: int,
        sample_limit: int,
        on_store: Iterable[OnScrape] = (),
        backfill: Backfill | None = None,
        job: str = "vpsmon",
    ) -> None:
        self._on_scrape = list(on_scrape)
        self._on_store = list(on_store)
        self._body_size_limit = body_size_limit
        self._sample_limit = sample_limit
        self._backfill = backfill
        self._job = job
        self._tasks: dict[int, tuple[Target, asyncio.Task[None]]] = {}
        self._states: dict[int, TargetState] = {}
        self._warned: set[tuple[str, str]] = set()  # pairs of URLs with the same labels
        self._session: aiohttp.ClientSession | None = None
        self.sources: Callable[[], list[SourceStatus]] = list

    async def __aenter__(self) -> Scraper:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Shutting down is not the end of the targets: no stale markers, the gap is
        # backfilled on the next start.
        await self._stop_tasks(list(self._tasks), end=False)
        for state in self._states.values():
            await _cancel(state.backfill_task)
        if self._session is not None:
            await self._session.close()

    @property
    def targets(self) -> list[Target]:
        return [t for t, _ in self._tasks.values()]

    async def sync(self, targets: Iterable[Target]) -> None:
        """Start tasks for new or changed targets; stop those that are gone."""
        wanted = {t.server_id: t for t in targets}
        self._warn_same_labels(wanted.values())
        gone = [sid for sid in self._tasks if sid not in wanted]
        changed = [sid for sid, (t, _) in self._tasks.items() if sid in wanted and wanted[sid] != t]
        await self._stop_tasks(changed, end=False)
        await self._stop_tasks(gone, end=True)
        for server_id, target in wanted.items():
            if server_id not in self._tasks:
                state = self._states.get(server_id)
                if state is None:
                    state = self._states[server_id] = TargetState(target)
                state.target = target
                task = asyncio.create_task(self._run(state), name=f"scrape {target.url}")
                self._tasks[server_id] = (target, task)

    def _warn_same_labels(self, targets: Iterable[Target]) -> None:
        """Two targets with the same labels (say two paths of one host:port without an
        `instance` label) write the same series: warn, as their samples would mix."""
        seen: dict[Labels, Target] = {}
        for target in targets:
            labels = target.target_labels(self._job)
            other = seen.setdefault(labels, target)
            if other is not target and (target.url, other.url) not in self._warned:
                self._warned.add((target.url, other.url))
                log.warning(
                    "targets have the same labels, their series will mix; give one an"
                    " instance label target=%s other=%s labels=%s",
                    target.url,
                    other.url,
                    dict(labels),
                )

    async def _stop_tasks(self, server_ids: list[int], *, end: bool) -> None:
        for server_id in server_ids:
            target, task = self._tasks.pop(server_id)
            await _cancel(task)
            if not end:
                continue
            # Removed: its series end here, as Prometheus ends a removed target's series.
            state = self._states.pop(server_id, None)
            if state is None:
                continue
            await _cancel(state.backfill_task)
            stale = [(s.name, s.labels) for s in state.previous]
            if state.had_synthetic:
                stale.extend((name, ()) for name in SYNTHETIC)
            if stale:
                result = ScrapeResult(target, time.time(), 0.0, [], None, stale, "end")
                await self._deliver(self._on_store, result)

    def target_status(self) -> list[TargetStatus]:
        out = []
        for state in self._states.values():
            t = state.target
            out.append(
                TargetStatus(
                    server_id=t.server_id,
                    name=t.name,
                    url=t.url,
                    source=t.source,
                    labels=dict(t.target_labels(self._job)),
                    interval=t.interval,
                    timeout=t.timeout,
                    health=state.health,
                    last_scrape=state.last_scrape,
                    last_duration=state.last_duration,
                    last_error=state.last_error,
                    samples=state.samples,
                    backfill=state.backfill,
                )
            )
        out.sort(key=lambda s: (s.name, s.server_id))
        return out

    def source_status(self) -> list[SourceStatus]:
        return self.sources()

    async def _run(self, state: TargetState) -> None:
        assert self._session is not None
        target = state.target
        try:
            ssl_setting: SSLSetting | None = ssl_for(target.tls)
            setup_error = None
        except ScrapeSetupError as err:
            ssl_setting, setup_error = None, str(err)
        offset = target.offset()
        while True:
            now = time.time()
            # Next slot on this target's own grid: k * interval + offset.
            await asyncio.sleep((offset - now) % target.interval)
            started = time.time()
            try:
                if ssl_setting is None:
                    result = ScrapeResult(target, started, 0.0, [], setup_error)
                else:
                    result = await scrape_once(
                        self._session,
                        target,
                        started,
                        body_size_limit=self._body_size_limit,
                        sample_limit=self._sample_limit,
                        ssl_setting=ssl_setting,
                        cache=state.cache,
                    )
            except Exception as err:  # one target's surprise must not end its loop
                log.exception("scrape crashed target=%s", target.url)
                result = ScrapeResult(target, started, 0.0, [], f"internal error: {err!r}")
            if result.error:
                log.info("scrape failed target=%s error=%s", target.url, result.error)
            was_up = state.health == "up"
            last_success = state.last_success
            result = self._record(state, result)
            await self._deliver(self._on_scrape, result)
            if result.up and not was_up and ssl_setting is not None:
                await self._maybe_backfill(state, ssl_setting, last_success, started)
            # Never scrape twice in the same slot even if the consumers were quick.
            await asyncio.sleep(0.001)

    def _record(self, state: TargetState, result: ScrapeResult) -> ScrapeResult:
        """Update the target's state; add stale markers for series that vanished."""
        if result.layout is not None and result.layout is state.previous_layout:
            stale: list[tuple[str, Labels]] = []  # the parser saw the same series in order
        else:
            stale = vanished(state.previous, result.samples)
        state.previous = result.samples
        state.previous_layout = result.layout
        state.had_synthetic = True
        state.last_scrape = result.timestamp
        state.last_duration = result.duration
        state.last_error = result.error
        state.samples = len(result.samples)
        state.health = "up" if result.up else "down"
        if result.up:
            state.last_success = result.timestamp
        return replace(result, stale=stale) if stale else result

    async def _maybe_backfill(
        self, state: TargetState, ssl_setting: SSLSetting, last_success: float | None, now: float
    ) -> None:
        if self._backfill is None or self._session is None:
            return
        if state.backfill_task is not None and not state.backfill_task.done():
            return
        try:
            since = await self._backfill.gap_start(state.target, last_success)
        except Exception as err:  # the database may be away; the next gap tries again
            log.warning(
                "cannot tell where the gap starts target=%s error=%s", state.target.url, err
            )
            return
        if since is None or now - since < 1.5 * state.target.interval:
            return

        def report(status: BackfillStatus) -> None:
            state.backfill = status

        state.backfill_task = asyncio.create_task(
            self._backfill.run(self._session, state.target, ssl_setting, since, now, report),
            name=f"backfill {state.target.url}",
        )

    async def _deliver(self, callbacks: list[OnScrape], result: ScrapeResult) -> None:
        for callback in callbacks:
            try:
                await callback(result)
            except Exception:
                log.exception("scrape consumer failed target=%s", result.target.url)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
