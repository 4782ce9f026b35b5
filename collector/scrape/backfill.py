"""Backfill: after a gap, read what was missed from the exporter's /history and store it.

A gap is noticed at the first successful scrape after the collector started or after failed
scrapes. It starts at the last successful scrape: the one this process saw, or after a restart
the one the writer stored last (servers.last_seen_at). If it is longer than 1.5 intervals, the
exporter's `/history?since=…&until=…` (exposition with timestamps, exporter/history.py) is
read in windows of `WINDOW` seconds and each instant is handed to the writer as a "backfill"
result at the exporter's own collection time. A plain node_exporter has no /history; its
404 is reported in the targets list and nothing else happens.

Bounded: at most `concurrency` targets backfill at once, each window's body obeys the body size
limit, and `pause` lets the writer drain between windows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp

from vpsmon.collector.scrape.fetch import FetchError, fetch_body
from vpsmon.collector.scrape.parse import ParseError, Sample, parse_timestamped
from vpsmon.collector.scrape.result import ScrapeResult
from vpsmon.collector.scrape.security import SSLSetting
from vpsmon.collector.scrape.status import BackfillStatus
from vpsmon.collector.scrape.target import Labels, Target

log = logging.getLogger("vpsmon.scrape")

# Seconds of history asked for at once: at the exporter's 5 s default and ~1,000 series,
# 60 instants, about 4 MB of text.
WINDOW = 300.0

Store = Callable[[ScrapeResult], Awaitable[None]]
LastStored = Callable[[int], Awaitable[float | None]]


class HistoryBackfill:
    def __init__(
        self,
        store: Store,
        last_stored: LastStored,
        *,
        max_gap: float,
        body_size_limit: int,
        concurrency: int = 4,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._last_stored = last_stored
        self._max_gap = max_gap
        self._body_size_limit = body_size_limit
        self._slots = asyncio.Semaphore(concurrency)
        self._pause = pause

    async def gap_start(self, target: Target, last_success: float | None) -> float | None:
        if last_success is not None:
            return last_success
        return await self._last_stored(target.server_id)

    async def run(
        self,
        session: aiohttp.ClientSession,
        target: Target,
        ssl_setting: SSLSetting,
        since: float,
        until: float,
        report: Callable[[BackfillStatus], None],
    ) -> None:
        # Nothing at or before the last stored sample, nothing from the scrape that ended the gap.
        since = max(since, until - self._max_gap) + 0.001
        until = until - 0.001
        status = BackfillStatus(time.time(), since, until)
        report(status)
        async with self._slots:
            stored = 0
            start = since
            try:
                while start <= until:
                    end = min(start + WINDOW, until)
                    stored += await self._window(session, target, ssl_setting, start, end)
                    report(BackfillStatus(status.started, since, until, stored))
                    start = end + 0.001
                    if self._pause is not None:
                        await self._pause()
            except (FetchError, ParseError) as err:
                log.info(
                    "backfill failed target=%s since=%.3f stored=%d error=%s",
                    target.url, since, stored, err,
                )  # fmt: skip
                report(BackfillStatus(status.started, since, until, stored, str(err), True))
                return
            log.info(
                "backfilled target=%s since=%.3f until=%.3f samples=%d",
                target.url, since, until, stored,
            )  # fmt: skip
            report(BackfillStatus(status.started, since, until, stored, None, True))

    async def _window(
        self,
        session: aiohttp.ClientSession,
        target: Target,
        ssl_setting: SSLSetting,
        since: float,
        until: float,
    ) -> int:
        body = await fetch_body(
            session,
            target,
            target.history_url,
            ssl_setting=ssl_setting,
            body_size_limit=self._body_size_limit,
            # History is rendered on demand; give it more time than a scrape of a ready payload.
            timeout=max(target.timeout, 30.0),
            params={"since": f"{since:.3f}", "until": f"{until:.3f}"},
        )
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("invalid exposition: body is not UTF-8") from None
        del body
        samples = await asyncio.to_thread(parse_timestamped, text)
        by_time = group_by_time(samples, since, until)
        stored = 0
        for ts in sorted(by_time):
            points = by_time[ts]
            await self._store(ScrapeResult(target, ts, 0.0, points, kind="backfill"))
            stored += len(points)
        return stored


def group_by_time(
    samples: list[tuple[Sample, float | None]], since: float, until: float
) -> dict[float, list[Sample]]:
    """Instants of the window, each with its samples; label tuples are shared between instants
    so a window costs one copy of every series' labels, not one per instant."""
    labels_seen: dict[Labels, Labels] = {}
    out: dict[float, list[Sample]] = {}
    for sample, ts in samples:
        if ts is None or not since <= ts <= until:
            continue  # a line without a timestamp is not history
        labels = labels_seen.setdefault(sample.labels, sample.labels)
        out.setdefault(ts, []).append(Sample(sample.name, labels, sample.value))
    return out
