"""Grouping, group_wait/group_interval/repeat_interval, resolution, silences and inhibition
behave as Alertmanager specifies; driven by a fake clock, delivered to a local webhook."""

from __future__ import annotations

import asyncpg

from tests.notify.conftest import T0, FakeClock
from tests.notify.helpers import add_channel, alert, deliver
from tests.notify.receiver import Receiver
from vpsmon.collector.notify import store
from vpsmon.collector.notify.dispatch import Dispatcher
from vpsmon.collector.notify.matchers import parse_matchers
from vpsmon.collector.notify.outbox import OutboxWorker
from vpsmon.collector.notify.silences import new_silence

ROUTING = """
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
inhibit_rules:
  - source_matchers: ['alertname="ServerDown"']
    target_matchers: ['alertname!="ServerDown"']
    equal: [instance]
"""


async def setup(pool: asyncpg.Pool, dispatcher: Dispatcher, url: str) -> None:
    await add_channel(pool, "hook", "webhook", {"url": url + "/hook"})
    await store.save_routing(pool, ROUTING, "test")
    await dispatcher.refresh()


async def step(d: Dispatcher, w: OutboxWorker, clock: FakeClock, seconds: float) -> None:
    await d.tick(clock.advance(seconds))
    await deliver(w, clock.now)


async def test_alerts_are_grouped_and_wait_group_wait_before_the_first_notification(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async with Receiver() as hook:
        await setup(pool, dispatcher, hook.url)
        await dispatcher.submit([alert("HighLoad", "a:9190"), alert("HighLoad", "b:9190")])
        await step(dispatcher, worker, clock, 29)
        assert hook.requests == []
        await step(dispatcher, worker, clock, 1)
        assert len(hook.requests) == 1
        payload = hook.requests[0].body
        assert payload["version"] == "4" and payload["status"] == "firing"
        assert payload["receiver"] == "hook"
        assert payload["groupLabels"] == {"alertname": "HighLoad"}
        assert payload["commonLabels"] == {"alertname": "HighLoad"}
        assert sorted(a["labels"]["instance"] for a in payload["alerts"]) == ["a:9190", "b:9190"]
        assert all(a["status"] == "firing" for a in payload["alerts"])


async def test_unchanged_group_repeats_only_after_repeat_interval(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async with Receiver() as hook:
        await setup(pool, dispatcher, hook.url)
        await dispatcher.submit([alert("HighLoad")])
        await step(dispatcher, worker, clock, 30)
        assert len(hook.requests) == 1
        # The rule keeps re-sending; every group_interval the group is looked at, silently.
        for _ in range(11):
            # As Prometheus: endsAt a few evaluation intervals ahead, refreshed each time.
            await dispatcher.submit([alert("HighLoad", ends=clock.now + 600)])
            await step(dispatcher, worker, clock, 300)
        assert len(hook.requests) == 1, "nothing changed within repeat_interval (1h)"
        await dispatcher.submit([alert("HighLoad", ends=clock.now + 600)])
        await step(dispatcher, worker, clock, 300)  # 3630 s after the first notification
        assert len(hook.requests) == 2


async def test_new_alert_in_a_notified_group_waits_for_group_interval(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async with Receiver() as hook:
        await setup(pool, dispatcher, hook.url)
        await dispatcher.submit([alert("HighLoad", "a:9190")])
        await step(dispatcher, worker, clock, 30)
        await dispatcher.submit([alert("HighLoad", "a:9190"), alert("HighLoad", "b:9190")])
        await step(dispatcher, worker, clock, 60)
        assert len(hook.requests) == 1, "group_interval (5m) has not passed"
        await dispatcher.submit([alert("HighLoad", "a:9190"), alert("HighLoad", "b:9190")])
        await step(dispatcher, worker, clock, 240)
        assert len(hook.requests) == 2
        assert len(hook.requests[1].body["alerts"]) == 2


async def test_resolved_alert_is_notified_as_resolved_once(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async with Receiver() as hook:
        await setup(pool, dispatcher, hook.url)
        await dispatcher.submit([alert("HighLoad", ends=clock.now + 240)])
        await step(dispatcher, worker, clock, 30)
        await dispatcher.submit([alert("HighLoad", ends=clock.now - 1)])  # resolved
        await step(dispatcher, worker, clock, 300)
        assert len(hook.requests) == 2
        resolved = hook.requests[1].body
        assert resolved["status"] == "resolved"
        assert resolved["alerts"][0]["status"] == "resolved"
        assert resolved["alerts"][0]["endsAt"] == "2027-01-15T08:00:29.000Z"
        # Prometheus keeps re-sending the resolved alert for a while: no more messages.
        for _ in range(4):
            await dispatcher.submit([alert("HighLoad", ends=T0 + 329)])
            await step(dispatcher, worker, clock, 300)
        assert len(hook.requests) == 2


async def test_alert_without_re_sends_resolves_after_resolve_timeout(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async with Receiver() as hook:
        await setup(pool, dispatcher, hook.url)
        await dispatcher.submit([{"labels": {"alertname": "Lonely"}}])
        await step(dispatcher, worker, clock, 30)
        await step(dispatcher, worker, clock, 300)  # 330 s > resolve_timeout of 300 s
        assert [r.body["status"] for r in hook.requests] == ["firing", "resolved"]


async def test_silenced_alert_is_not_sent_until_the_silence_expires(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async with Receiver() as hook:
        await setup(pool, dispatcher, hook.url)
        silence = new_silence(
            parse_matchers('alertname="HighLoad", instance=~"a:.*"'),
            clock.now,
            clock.now + 600,
            "alice",
            "maintenance",
            clock.now,
        )
        await store.save_silence(pool, silence)
        await dispatcher.refresh()
        await dispatcher.submit([alert("HighLoad", "a:9190"), alert("DiskFull", "a:9190")])
        await step(dispatcher, worker, clock, 30)
        assert [r.body["groupLabels"]["alertname"] for r in hook.requests] == ["DiskFull"]
        states = {a["labels"]["alertname"]: a for a in dispatcher.alert_states(clock.now)}
        assert states["HighLoad"]["silencedBy"] == [silence.id]
        for _ in range(2):
            await dispatcher.submit(
                [
                    alert("HighLoad", "a:9190", ends=clock.now + 600),
                    alert("DiskFull", "a:9190", ends=clock.now + 600),
                ]
            )
            await step(dispatcher, worker, clock, 300)  # silence ends at 600 s
        assert [r.body["groupLabels"]["alertname"] for r in hook.requests] == [
            "DiskFull",
            "HighLoad",
        ]


async def test_expiring_a_silence_early_lets_the_alert_through(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async with Receiver() as hook:
        await setup(pool, dispatcher, hook.url)
        silence = new_silence(
            parse_matchers('alertname="HighLoad"'),
            clock.now,
            clock.now + 86400,
            "bob",
            "",
            clock.now,
        )
        await store.save_silence(pool, silence)
        await dispatcher.refresh()
        await dispatcher.submit([alert("HighLoad")])
        await step(dispatcher, worker, clock, 30)
        assert hook.requests == []
        assert await store.expire_silence(pool, silence.id, clock.now)
        await dispatcher.refresh()
        await dispatcher.submit([alert("HighLoad", ends=clock.now + 600)])
        await step(dispatcher, worker, clock, 300)
        assert len(hook.requests) == 1


async def test_server_down_inhibits_its_other_alerts_but_not_other_servers(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async with Receiver() as hook:
        await setup(pool, dispatcher, hook.url)
        await dispatcher.submit(
            [
                alert("ServerDown", "a:9190"),
                alert("HighLoad", "a:9190"),
                alert("HighLoad", "b:9190"),
            ]
        )
        await step(dispatcher, worker, clock, 30)
        sent = {
            (r.body["groupLabels"]["alertname"], a["labels"]["instance"])
            for r in hook.requests
            for a in r.body["alerts"]
        }
        assert sent == {("ServerDown", "a:9190"), ("HighLoad", "b:9190")}


async def test_routes_match_labels_continue_and_fall_back_to_the_parent(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async with Receiver() as hook:
        for name in ("default", "oncall", "db"):
            await add_channel(pool, name, "webhook", {"url": f"{hook.url}/{name}"})
        await store.save_routing(
            pool,
            """
route:
  receiver: default
  group_by: [alertname]
  group_wait: 10s
  routes:
    - matchers: ['severity=~"critical|page"']
      receiver: oncall
      continue: true
    - matchers: ['team="db"', 'severity!="info"']
      receiver: db
""",
            "test",
        )
        await dispatcher.refresh()
        await dispatcher.submit(
            [
                alert("A", severity="critical", team="db"),
                alert("B", severity="info", team="db"),
                alert("C", severity="warning", team="db"),
            ]
        )
        await step(dispatcher, worker, clock, 10)
        got = sorted((r.path, r.body["groupLabels"]["alertname"]) for r in hook.requests)
        assert got == [("/db", "A"), ("/db", "C"), ("/default", "B"), ("/oncall", "A")]


async def test_channel_without_send_resolved_gets_no_resolved_message(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    async with Receiver() as hook:
        await add_channel(pool, "quiet", "webhook", {"url": hook.url}, send_resolved=False)
        await dispatcher.refresh()  # default routing: receiver "*"
        await dispatcher.submit([alert("HighLoad")])
        await step(dispatcher, worker, clock, 30)
        await dispatcher.submit([alert("HighLoad", ends=clock.now - 1)])
        await step(dispatcher, worker, clock, 300)
        assert [r.body["status"] for r in hook.requests] == ["firing"]
        # The notification log was still cleared: a new firing is a new message.
        await dispatcher.submit([alert("HighLoad", ends=clock.now + 600)])
        await step(dispatcher, worker, clock, 300)
        assert [r.body["status"] for r in hook.requests] == ["firing", "firing"]


async def test_a_subscription_delivers_only_alerts_of_servers_its_user_may_see(
    pool: asyncpg.Pool, dispatcher: Dispatcher, worker: OutboxWorker, clock: FakeClock
) -> None:
    from vpsmon.collector import access, accounts

    mine = await pool.fetchval(
        "INSERT INTO servers (name, url) VALUES ('mine', 'http://10.0.0.1:9190/metrics')"
        " RETURNING id"
    )
    await pool.execute(
        "INSERT INTO servers (name, url) VALUES ('theirs', 'http://10.0.0.2:9190/metrics')"
    )
    user = await accounts.create_user(pool, "tenant", "tenant-password-1", "viewer")
    user_id = user.id
    await access.grant_server(pool, user_id, mine)
    async with Receiver() as hook:
        channel_id = await add_channel(
            pool, "tenant-hook", "webhook", {"url": hook.url}, catch_all=False
        )
        await store.add_subscription(pool, user_id, channel_id, parse_matchers('severity="page"'))
        await dispatcher.refresh()
        await dispatcher.submit(
            [
                alert("Down", "10.0.0.1:9190", severity="page"),
                alert("Down", "10.0.0.2:9190", severity="page"),
                alert("Orphan", "elsewhere:9100", severity="page"),
                alert("Quiet", "10.0.0.1:9190", severity="info"),
            ]
        )
        await step(dispatcher, worker, clock, 30)
        got = [
            (a["labels"]["alertname"], a["labels"]["instance"])
            for r in hook.requests
            for a in r.body["alerts"]
        ]
        assert got == [("Down", "10.0.0.1:9190")]
