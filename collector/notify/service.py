"""The notify stage as the collector runs it: dispatcher, outbox worker and built-in alerts.

collector/app.py builds one `NotifyService`, hands `service.submit` (the notify function) to
the rule manager, and runs it with `async with service.running(...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg

from vpsmon.collector.config import CollectorConfig
from vpsmon.collector.head import Head
from vpsmon.collector.notify.api import PostableAlert
from vpsmon.collector.notify.builtin import BuiltinAlerts
from vpsmon.collector.notify.dispatch import Dispatcher
from vpsmon.collector.notify.outbox import OutboxWorker
from vpsmon.collector.notify.urlguard import UrlGuard
from vpsmon.collector.servers import list_servers
from vpsmon.collector.traffic import Usage

UsageFn = Callable[[int, float], Usage | None]


class NotifyService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        config: CollectorConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        n = config.notify
        host = config.listen.host
        shown = "127.0.0.1" if host in {"0.0.0.0", ""} else host
        self.external_url = (n.external_url or f"http://{shown}:{config.listen.port}").rstrip("/")
        self.pool = pool
        self.clock = clock
        self.guard = UrlGuard.from_list(n.allowed_hosts)
        self.dispatcher = Dispatcher(
            pool, clock=clock, resolve_timeout=n.resolve_timeout, external_url=self.external_url
        )
        self.worker = OutboxWorker(
            pool, self.guard, clock=clock, timeout=n.timeout, max_attempts=n.max_attempts
        )
        self.builtin = BuiltinAlerts(n, job=config.job, external_url=self.external_url)
        self.usage: UsageFn | None = None  # set by the web app, which counts traffic

    async def submit(self, alerts: Sequence[PostableAlert]) -> None:
        """The notify function (collector/notify/api.py) for the rule manager."""
        await self.dispatcher.submit(alerts)

    @contextlib.asynccontextmanager
    async def running(self, head: Head) -> AsyncIterator[NotifyService]:
        stop = asyncio.Event()
        await self.dispatcher.start()
        async with self.worker:
            tasks = [
                asyncio.create_task(self.dispatcher.run(stop), name="notify-dispatch"),
                asyncio.create_task(
                    self.worker.run(stop, self.dispatcher.wakeup), name="notify-outbox"
                ),
                asyncio.create_task(
                    self.builtin.run(
                        self.submit,
                        lambda: list_servers(self.pool),
                        head.state,
                        lambda: self.usage,
                        self.clock,
                        stop,
                    ),
                    name="notify-builtin",
                ),
            ]
            try:
                yield self
            finally:
                stop.set()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await asyncio.wait_for(task, 5)
