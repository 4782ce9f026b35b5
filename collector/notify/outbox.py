"""Delivery from the outbox: claim a row atomically, send it, record the attempt.

healthchecks' pattern (STYLE.md "Outbox for side effects"): the dispatcher writes a row
before anything is sent; a worker claims it with `UPDATE … RETURNING` (zero rows: someone else
took it), sends, and records the outcome. Each channel is drained by its own task, one
message at a time and in order, with a timeout per send, so a slow or failing channel only
ever delays itself. Failures are retried with exponential backoff up to `max_attempts`;
4xx-style errors that a retry cannot fix fail at once. A claim is a lease: if the collector
dies mid-send, the row is taken up again once the lease ends (the one window where a
message can repeat; see docs/notifications.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg

from vpsmon.collector.notify import store
from vpsmon.collector.notify.channels import KINDS, Delivery, DeliveryError
from vpsmon.collector.notify.store import Channel, ts
from vpsmon.collector.notify.templates import TemplateError
from vpsmon.collector.notify.urlguard import UrlGuard

log = logging.getLogger("vpsmon.notify.outbox")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: str
    error: str | None
    duration: float
    retry: bool = True


def backoff(attempts: int, base: float = 10.0, cap: float = 600.0) -> float:
    """Seconds before the next try after `attempts` failures: 10 s, 20 s, 40 s … 10 min."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


class OutboxWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        guard: UrlGuard,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 15.0,
        max_attempts: int = 10,
        lease: float = 120.0,
        retention: float = 30 * 86400.0,
    ) -> None:
        self.pool = pool
        self.guard = guard
        self.clock = clock
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.lease = max(lease, timeout * 2)
        self.retention = retention
        self._session: aiohttp.ClientSession | None = None
        self._drains: dict[int, asyncio.Task[None]] = {}

    async def __aenter__(self) -> OutboxWorker:
        connector = aiohttp.TCPConnector(resolver=self.guard.resolver(), limit=100)
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": "vpsmon-notify"}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._drains.values():
            task.cancel()
        for task in self._drains.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._drains.clear()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use OutboxWorker as an async context manager")
        return self._session

    async def send(self, channel: Channel, payload: dict[str, Any], now: float) -> Outcome:
        """Send one notification now (also used by "send test"); never raises."""
        kind = KINDS.get(channel.kind)
        started = time.monotonic()
        try:
            if kind is None:
                raise DeliveryError(f"unknown channel kind {channel.kind!r}", retry=False)
            delivery = Delivery(channel, payload, self.session, self.guard, self.timeout, now)
            # The overall timeout also covers DNS and SMTP conversations.
            status = await asyncio.wait_for(kind.send(delivery), self.timeout + 1)
            return Outcome(True, status, None, time.monotonic() - started)
        except DeliveryError as err:
            return Outcome(
                False, err.status or "error", str(err), time.monotonic() - started, err.retry
            )
        except TemplateError as err:
            return Outcome(False, "template", str(err), time.monotonic() - started, False)
        except TimeoutError:
            return Outcome(
                False, "timeout", f"no answer within {self.timeout:g}s", time.monotonic() - started
            )
        except Exception as err:  # a sender bug must not kill the worker
            log.exception("sender failed channel=%s", channel.name)
            return Outcome(
                False, "error", f"{type(err).__name__}: {err}", time.monotonic() - started
            )

    async def record_attempt(
        self, outbox_id: int | None, channel_id: int, started: float, outcome: Outcome
    ) -> None:
        await self.pool.execute(
            "INSERT INTO notify_attempts (outbox_id, channel_id, started_at, duration_ms, ok,"
            " status, error) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            outbox_id,
            channel_id,
            ts(started),
            int(outcome.duration * 1000),
            outcome.ok,
            outcome.status[:200],
            (outcome.error or "")[:2000] or None,
        )

    async def claim(self, channel_id: int, now: float) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "UPDATE notify_outbox SET state = 'sending', attempts = attempts + 1,"
            " claimed_until = $3 WHERE id = ("
            "  SELECT id FROM notify_outbox WHERE channel_id = $1 AND ("
            "   (state = 'pending' AND next_attempt_at <= $2)"
            "   OR (state = 'sending' AND claimed_until <= $2))"
            "  ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
            ") RETURNING id, channel_id, payload, attempts",
            channel_id,
            ts(now),
            ts(now + self.lease),
        )

    async def deliver_one(self, channel_id: int, now: float | None = None) -> bool:
        """Claim and send the oldest due row of a channel; False when none was due."""
        now = self.clock() if now is None else now
        row = await self.claim(channel_id, now)
        if row is None:
            return False
        channel = await store.get_channel(self.pool, channel_id)
        if channel is None or not channel.enabled:
            outcome = Outcome(False, "disabled", "the channel is disabled", 0.0, False)
        else:
            outcome = await self.send(channel, json.loads(row["payload"]), now)
        await self.record_attempt(row["id"], channel_id, now, outcome)
        if outcome.ok:
            await self.pool.execute(
                "UPDATE notify_outbox SET state = 'sent', sent_at = $2, last_error = NULL,"
                " claimed_until = NULL WHERE id = $1",
                row["id"],
                ts(now + outcome.duration),
            )
            log.info(
                "notification sent channel=%s id=%d status=%s",
                channel.name if channel else channel_id,
                row["id"],
                outcome.status,
            )
            return True
        final = not outcome.retry or row["attempts"] >= self.max_attempts
        await self.pool.execute(
            "UPDATE notify_outbox SET state = $2, next_attempt_at = $3, last_error = $4,"
            " claimed_until = NULL WHERE id = $1",
            row["id"],
            "failed" if final else "pending",
            ts(now + backoff(row["attempts"])),
            outcome.error,
        )
        log.warning(
            "notification failed channel=%s id=%d attempt=%d final=%s error=%s",
            channel.name if channel else channel_id,
            row["id"],
            row["attempts"],
            final,
            outcome.error,
        )
        return True

    async def due_channels(self, now: float) -> list[int]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT channel_id FROM notify_outbox WHERE"
            " (state = 'pending' AND next_attempt_at <= $1)"
            " OR (state = 'sending' AND claimed_until <= $1)",
            ts(now),
        )
        return [r["channel_id"] for r in rows]

    async def _drain(self, channel_id: int) -> None:
        try:
            while await self.deliver_one(channel_id):
                pass
        except Exception as err:  # database away: the rows stay queued
            log.warning("outbox drain failed channel_id=%d error=%s", channel_id, err)

    async def poll(self, now: float | None = None) -> None:
        """Start a drain task for every channel with due rows that has none running."""
        now = self.clock() if now is None else now
        for channel_id in await self.due_channels(now):
            task = self._drains.get(channel_id)
            if task is None or task.done():
                self._drains[channel_id] = asyncio.create_task(
                    self._drain(channel_id), name=f"notify-channel-{channel_id}"
                )

    async def idle(self) -> None:
        """Wait for every running drain (tests)."""
        tasks = [t for t in self._drains.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def prune(self, now: float) -> None:
        cutoff = ts(now - self.retention)
        await self.pool.execute(
            "DELETE FROM notify_outbox WHERE state IN ('sent', 'failed') AND created_at < $1",
            cutoff,
        )
        await self.pool.execute("DELETE FROM notify_attempts WHERE started_at < $1", cutoff)

    async def run(self, stop: asyncio.Event, wakeup: asyncio.Event, interval: float = 2.0) -> None:
        last_prune = 0.0
        while not stop.is_set():
            try:
                await self.poll()
                now = self.clock()
                if now - last_prune > 3600:
                    await self.prune(now)
                    last_prune = now
            except Exception as err:
                log.warning("outbox poll failed error=%s", err)
            wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                waiter = asyncio.ensure_future(wakeup.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait(
                    {waiter, stopper}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                stopper.cancel()
