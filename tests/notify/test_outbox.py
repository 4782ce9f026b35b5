"""The outbox: nothing queued is lost or repeated across a restart, failures are retried with
backoff and logged per attempt, and a slow channel never delays the others."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web

from tests.notify.conftest import FakeClock
from tests.notify.helpers import add_channel, alert, deliver, outbox
from tests.notify.receiver import Receiver
from vpsmon.collector.notify.dispatch import Dispatcher
from vpsmon.collector.notify.outbox import OutboxWorker, backoff
from vpsmon.collector.notify.urlguard import UrlGuard


async def test_restart_between_firing_and_delivery_delivers_exactly_once(
    pool: asyncpg.Pool, clock: FakeClock, guard: UrlGuard
) -> None:
    async with Receiver() as hook:
        await add_channel(pool, "hook", "webhook", {"url": hook.url})
        first = Dispatcher(pool, clock=clock)
        await first.start()
        await first.submit([alert("HighLoad", ends=clock.now + 600)])
        await first.tick(clock.advance(30))
        # The collector stops here: the notification is queued, nothing was sent.
        assert [r["state"] for r in await outbox(pool)] == ["pending"]
        assert hook.requests == []

        second = Dispatcher(pool, clock=clock)
        await second.start()
        async with OutboxWorker(pool, guard, clock=clock) as worker:
            for _ in range(10):  # the rules keep re-sending the same alert after the restart
                await second.submit([alert("HighLoad", ends=clock.now + 600)])
                await second.tick(clock.advance(60))
                await deliver(worker, clock.now)
        assert len(hook.requests) == 1
        assert [r["state"] for r in await outbox(pool)] == ["sent"]


async def test_restart_during_group_wait_still_notifies_once(
    pool: asyncpg.Pool, clock: FakeClock, guard: UrlGuard
) -> None:
    async with Receiver() as hook:
        await add_channel(pool, "hook", "webhook", {"url": hook.url})
        first = Dispatcher(pool, clock=clock)
        await first.start()
        await first.submit([alert("HighLoad", ends=clock.now + 900)])
        await first.tick(clock.advance(10))  # group_wait (30 s) not over: nothing queued
        assert await outbox(pool) == []

        # After the restart the rules have not re-sent yet: the stored alert is enough.
        second = Dispatcher(pool, clock=clock)
        await second.start()
        async with OutboxWorker(pool, guard, clock=clock) as worker:
            for _ in range(6):
                await second.tick(clock.advance(30))
                await deliver(worker, clock.now)
        assert len(hook.requests) == 1
        assert hook.requests[0].body["alerts"][0]["labels"]["alertname"] == "HighLoad"


async def test_row_claimed_by_a_worker_that_died_is_sent_after_its_lease(
    pool: asyncpg.Pool, dispatcher: Dispatcher, clock: FakeClock, guard: UrlGuard
) -> None:
    async with Receiver() as hook:
        channel_id = await add_channel(pool, "hook", "webhook", {"url": hook.url})
        await dispatcher.refresh()
        await dispatcher.submit([alert("HighLoad", ends=clock.now + 600)])
        await dispatcher.tick(clock.advance(30))
        async with OutboxWorker(pool, guard, clock=clock, lease=120) as dead:
            assert await dead.claim(channel_id, clock.now) is not None  # then it crashes
        async with OutboxWorker(pool, guard, clock=clock, lease=120) as worker:
            await deliver(worker, clock.advance(60))
            assert hook.requests == [], "the lease has not ended: nobody else sends it"
            await deliver(worker, clock.advance(61))
        assert len(hook.requests) == 1


async def test_failures_are_retried_with_backoff_and_every_attempt_is_logged(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    answers = [503, 500, 200]

    async def flaky(request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"answer": "x"}, status=answers.pop(0))

    async with Receiver(flaky) as hook:
        await add_channel(pool, "hook", "webhook", {"url": hook.url})
        await dispatcher.refresh()
        await dispatcher.submit([alert("HighLoad", ends=clock.now + 3600)])
        await dispatcher.tick(clock.advance(30))
        await deliver(worker, clock.now)
        await deliver(worker, clock.advance(backoff(1) - 1))
        assert len(hook.requests) == 1, "the first retry waits backoff(1)"
        await deliver(worker, clock.advance(1))
        await deliver(worker, clock.advance(backoff(2)))
        assert len(hook.requests) == 3
    attempts = await pool.fetch("SELECT ok, status, error FROM notify_attempts ORDER BY id")
    assert [(a["ok"], a["status"]) for a in attempts] == [
        (False, "HTTP 503"),
        (False, "HTTP 500"),
        (True, "HTTP 200"),
    ]
    assert "HTTP 503" in attempts[0]["error"]
    row = (await outbox(pool))[0]
    assert row["state"] == "sent" and row["attempts"] == 3


async def test_client_error_fails_at_once_without_retries(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async def refuse(request: web.Request, body: Any) -> web.StreamResponse:
        return web.Response(status=400, text="bad payload")

    async with Receiver(refuse) as hook:
        await add_channel(pool, "hook", "webhook", {"url": hook.url})
        await dispatcher.refresh()
        await dispatcher.submit([alert("HighLoad", ends=clock.now + 3600)])
        await dispatcher.tick(clock.advance(30))
        for _ in range(3):
            await deliver(worker, clock.advance(700))
        assert len(hook.requests) == 1
    row = (await outbox(pool))[0]
    assert row["state"] == "failed" and "bad payload" in row["last_error"]


async def test_a_hanging_channel_never_delays_another(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async def hang(request: web.Request, body: Any) -> web.StreamResponse:
        await asyncio.sleep(3)
        return web.json_response({})

    async with Receiver(hang) as slow, Receiver() as fast:
        await add_channel(pool, "a-slow", "webhook", {"url": slow.url})
        await add_channel(pool, "b-fast", "webhook", {"url": fast.url})
        await dispatcher.refresh()
        for i in range(3):
            await dispatcher.submit([alert(f"Alert{i}", ends=clock.now + 3600)])
        await dispatcher.tick(clock.advance(30))
        await worker.poll(clock.now)
        await fast.wait_for(3, within=1.5)
        assert len(fast.requests) == 3, "the fast channel got all three while the slow one hung"
        assert len(slow.requests) == 1
        await worker.idle()  # the slow one times out after 2 s (the worker's timeout)
    status = await pool.fetch(
        "SELECT c.name, a.ok, a.status FROM notify_attempts a JOIN notify_channels c"
        " ON c.id = a.channel_id ORDER BY a.id"
    )
    assert ("a-slow", False, "timeout") in [tuple(r) for r in status]
