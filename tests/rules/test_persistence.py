"""Alert states survive a restart; rule outputs are stored as series (real PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import asyncpg

from vpsmon.collector.promql import Engine, MemorySource, Vector
from vpsmon.collector.rules.alerting import Alert, AlertState
from vpsmon.collector.rules.engine import engine_query, writer_append
from vpsmon.collector.rules.group import RuleGroup
from vpsmon.collector.rules.model import OutputSample, labels_key
from vpsmon.collector.rules.rulefile import parse_rule_file
from vpsmon.collector.rules.store import AlertStore, restore_alert
from vpsmon.collector.storage.reader import StorageReader
from vpsmon.collector.storage.writer import SampleWriter

RULES = """groups:
  - name: g
    rules:
      - alert: Down
        expr: up == 0
        for: 30m
        labels: {severity: page}
      - alert: Instant
        expr: up == 0
"""


def make_group(source: MemorySource, sent: list[dict[str, Any]]) -> RuleGroup:
    async def notify(alerts: list[dict[str, Any]]) -> None:
        sent.extend(alerts)

    async def append(samples: Any) -> None:
        return None

    spec = parse_rule_file(RULES, "r.yml").groups[0]
    return RuleGroup(spec, query=engine_query(Engine(source)), append=append, notify=notify)


def down_source(until: float) -> MemorySource:
    source = MemorySource()
    t = 0.0
    while t <= until:
        source.add({"__name__": "up", "instance": "web1", "job": "node"}, t, 0)
        t += 60
    return source


async def test_a_restart_neither_refires_nor_forgets_pending_timers(pool: asyncpg.Pool) -> None:
    source = down_source(4 * 3600)
    sent: list[dict[str, Any]] = []
    before = make_group(source, sent)
    store = AlertStore(pool)
    await store.restore(before, 0)
    for t in (0, 60, 600):  # Instant fires at 0; Down is pending since 0
        await before.evaluate(t)
        await store.save(before)
    # Announced when it fired, and re-sent after the resend delay as Prometheus does.
    assert [(a["labels"]["alertname"], a["startsAt"]) for a in sent] == [
        ("Instant", "1970-01-01T00:00:00.000Z")
    ] * 2
    down, instant = before.alerting_rules()
    assert down.state == AlertState.PENDING and instant.state == AlertState.FIRING

    # The collector is away from 600 s to 900 s, then starts afresh.
    sent.clear()
    after = make_group(source, sent)
    assert await AlertStore(pool).restore(after, 630) == 2
    await after.evaluate(630)
    assert sent == []  # still firing and sent 30 s ago: nothing new to announce
    after = make_group(source, sent)
    assert await AlertStore(pool).restore(after, 900) == 2
    down, instant = after.alerting_rules()
    (firing,) = instant.active.values()
    assert firing.state == AlertState.FIRING and firing.fired_at == 0
    (pending,) = down.active.values()
    # 600 s spent pending are kept; the 300 s away do not count: due at 1800 + 300.
    assert pending.state == AlertState.PENDING and pending.active_at == 300
    await after.evaluate(2040)
    assert down.state == AlertState.PENDING
    await after.evaluate(2100)
    assert down.state == AlertState.FIRING
    starts = {(a["labels"]["alertname"], a["startsAt"]) for a in sent}
    # The original start, not a new firing; Down fires once its remaining time has passed.
    assert starts == {
        ("Instant", "1970-01-01T00:00:00.000Z"),
        ("Down", "1970-01-01T00:35:00.000Z"),
    }


def test_restore_follows_prometheus_grace_period_and_outage_tolerance() -> None:
    def pending(active_at: float) -> Alert:
        return Alert({"alertname": "A"}, {}, AlertState.PENDING, active_at, 1.0)

    # 55 of 60 minutes spent when the collector went away at 3300: 10 minutes of grace.
    resumed = restore_alert(pending(0), 3600, down_at=3300, now=4000)
    assert resumed is not None and resumed.active_at + 3600 == 4000 + 600
    # Away for more than an hour: pending alerts start afresh.
    assert restore_alert(pending(0), 3600, down_at=100, now=100 + 3601) is None
    firing = Alert({"alertname": "A"}, {}, AlertState.FIRING, 0, 1.0, fired_at=60)
    assert restore_alert(firing, 3600, down_at=100, now=100_000) is firing


async def test_rule_outputs_are_stored_as_series_and_read_back(pool: asyncpg.Pool) -> None:
    writer = SampleWriter(pool, "vpsmon")
    spec = parse_rule_file(
        "groups:\n  - name: g\n    rules:\n      - record: job:x:sum\n        expr: vector(42)\n"
        "        labels: {job: node}\n",
        "r.yml",
    ).groups[0]
    group = RuleGroup(
        spec, query=engine_query(Engine(MemorySource())), append=writer_append(writer)
    )
    await group.evaluate(1_000_000)
    await group.evaluate(1_000_060)
    assert await writer.flush()
    value = await Engine(StorageReader(pool)).instant_query("job:x:sum", 1_000_070)
    assert isinstance(value, Vector)
    assert [(s.labels, s.value) for s in value.samples] == [
        ({"__name__": "job:x:sum", "job": "node"}, 42.0)
    ]


async def test_outputs_reach_the_writer_with_sorted_labels_without_name_whether_keyed_or_not() -> (
    None
):
    got: list[Any] = []

    class Writer:
        async def append_series(self, samples: Any) -> None:
            got.extend(samples)

    labels = {"zone": "b", "__name__": "ALERTS", "Upper": "x", "alertname": "A", "_a": "y"}
    await writer_append(Writer())(
        [OutputSample(labels, 5.0, 1.0), OutputSample(labels, 5.0, 1.0, labels_key(labels))]
    )
    want = ("ALERTS", (("Upper", "x"), ("_a", "y"), ("alertname", "A"), ("zone", "b")), 5.0, 1.0)
    assert got == [want, want]


async def test_saving_again_writes_only_what_changed_and_forgets_what_is_gone(
    pool: asyncpg.Pool,
) -> None:
    sent: list[dict[str, Any]] = []
    source = down_source(until=10_000)
    group = make_group(source, sent)
    store = AlertStore(pool)
    await store.forget(group.key)
    for rule in group.alerting_rules():
        rule.restored = True

    async def rows() -> dict[str, tuple[str, bytes, dict[str, str]]]:
        async with pool.acquire() as conn:
            found = await conn.fetch(
                "SELECT rule_name, state, labels_hash, labels FROM rule_alerts"
                " WHERE group_key = $1",
                group.key,
            )
        return {
            r["rule_name"]: (r["state"], bytes(r["labels_hash"]), json.loads(r["labels"]))
            for r in found
        }

    await group.evaluate(1_000)
    await store.save(group)
    first = await rows()
    assert {name: state for name, (state, _, _) in first.items()} == {
        "Down": "pending",
        "Instant": "firing",
    }
    for _, digest, labels in first.values():
        assert digest == hashlib.sha256(json.dumps(sorted(labels.items())).encode()).digest()
    await group.evaluate(1_000 + 31 * 60)
    await store.save(group)
    assert {name: state for name, (state, _, _) in (await rows()).items()} == {
        "Down": "firing",
        "Instant": "firing",
    }
    for rule in group.alerting_rules():
        rule.active.clear()
    await store.save(group)
    assert await rows() == {}


async def test_two_rules_of_one_name_and_labels_share_a_saved_row(pool: asyncpg.Pool) -> None:
    spec = parse_rule_file(
        """groups:
  - name: twins
    rules:
      - alert: Twin
        expr: up == 0
        for: 30m
      - alert: Twin
        expr: up == 0
""",
        "r.yml",
    ).groups[0]
    group = RuleGroup(spec, query=engine_query(Engine(down_source(until=10_000))))
    store = AlertStore(pool)
    await store.forget(group.key)
    for t in (1_000, 1_060):
        await group.evaluate(t)
        await store.save(group)
        async with pool.acquire() as conn:
            states = await conn.fetch(
                "SELECT state FROM rule_alerts WHERE group_key = $1", group.key
            )
        # The second rule's alert (firing at once) is the one kept, as it always was.
        assert [r["state"] for r in states] == ["firing"]
    await store.forget(group.key)
