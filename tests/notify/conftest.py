"""Fixtures for the notify tests: a fake clock, a dispatcher and a worker on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from vpsmon.collector.notify.dispatch import Dispatcher
from vpsmon.collector.notify.outbox import OutboxWorker
from vpsmon.collector.notify.urlguard import UrlGuard

T0 = 1_800_000_000.0


@dataclass
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def guard() -> UrlGuard:
    return UrlGuard.from_list(["127.0.0.1"])


@pytest.fixture
async def dispatcher(pool: asyncpg.Pool, clock: FakeClock) -> Dispatcher:
    d = Dispatcher(pool, clock=clock, resolve_timeout=300)
    await d.start()
    return d


@pytest.fixture
async def worker(
    pool: asyncpg.Pool, clock: FakeClock, guard: UrlGuard
) -> AsyncIterator[OutboxWorker]:
    async with OutboxWorker(pool, guard, clock=clock, timeout=2.0) as w:
        yield w
