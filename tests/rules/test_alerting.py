"""The alert state machine: inactive -> pending -> firing -> resolved, driven by explicit times."""

from __future__ import annotations

from typing import Any

from vpsmon.collector.rules.alerting import AlertState
from vpsmon.collector.rules.group import RuleGroup
from vpsmon.collector.rules.model import OutputSample, Sample
from vpsmon.collector.rules.rulefile import parse_rule_file
from vpsmon.collector.storage.query import is_stale_marker

RULES = """
groups:
  - name: g
    interval: 1m
    rules:
      - alert: Down
        expr: up == 0
        for: 2m
        keep_firing_for: {keep}
        labels: {{severity: page}}
        annotations:
          summary: "{{{{ $labels.instance }}}} value {{{{ $value }}}}"
"""


class Scripted:
    """A query function answering from a script: time -> samples (an empty answer otherwise)."""

    def __init__(self, script: dict[float, list[Sample]]) -> None:
        self.script = script

    async def __call__(self, expr: str, t: float) -> list[Sample]:
        return self.script.get(t, [])


def down(value: float = 0.0) -> list[Sample]:
    return [Sample({"__name__": "up", "instance": "web1", "job": "node"}, value)]


def make_group(script: dict[float, list[Sample]], keep: str = "0s") -> tuple[RuleGroup, Any]:
    spec = parse_rule_file(RULES.format(keep=keep), "r.yml").groups[0]
    written: list[OutputSample] = []
    sent: list[list[dict[str, Any]]] = []

    async def append(samples: list[OutputSample]) -> None:
        written.extend(samples)

    async def notify(alerts: list[dict[str, Any]]) -> None:
        sent.append(alerts)

    group = RuleGroup(
        spec, query=Scripted(script), append=append, notify=notify, external_url="http://v:8080"
    )
    for rule in group.alerting_rules():
        rule.restored = True
    return group, (written, sent)


async def test_alert_is_pending_then_fires_after_for_then_resolves() -> None:
    group, (written, sent) = make_group({t: down() for t in (0, 60, 120, 180)})
    rule = group.alerting_rules()[0]
    states = []
    for t in (0, 60, 120, 180, 240):
        await group.evaluate(t)
        states.append(rule.state)
    assert states[:3] == [AlertState.PENDING, AlertState.PENDING, AlertState.FIRING]
    assert states[3:] == [AlertState.FIRING, AlertState.INACTIVE]
    (alert,) = rule.active.values()
    assert alert.shown_state == "resolved" and alert.resolved_at == 240
    assert alert.labels == {
        "alertname": "Down",
        "instance": "web1",
        "job": "node",
        "severity": "page",
    }
    assert alert.annotations == {"summary": "web1 value 0"}
    # Notified when firing (at 120), not re-sent within the resend delay, resolved at 240.
    assert [len(batch) for batch in sent] == [1, 1]
    first, last = (batch[0] for batch in sent)
    assert first["startsAt"] == "1970-01-01T00:02:00.000Z" and "endsAt" in first
    assert last["endsAt"] == "1970-01-01T00:04:00.000Z"
    assert first["generatorURL"] == "http://v:8080/graph?g0.expr=up+%3D%3D+0&g0.tab=1"


async def test_alerts_series_are_written_as_prometheus_writes_them() -> None:
    group, (written, _) = make_group({0: down(), 60: down()})
    await group.evaluate(0)
    alerts = [s for s in written if s.labels["__name__"] == "ALERTS"]
    for_state = [s for s in written if s.labels["__name__"] == "ALERTS_FOR_STATE"]
    assert alerts[0].labels == {
        "__name__": "ALERTS",
        "alertname": "Down",
        "alertstate": "pending",
        "instance": "web1",
        "job": "node",
        "severity": "page",
    }
    assert (alerts[0].value, for_state[0].value) == (1.0, 0.0)
    await group.evaluate(60)
    await group.evaluate(120)  # gone: staleness markers for both series
    stale = [s for s in written if s.timestamp == 120]
    assert len(stale) == 2 and all(is_stale_marker(s.value) for s in stale)


async def test_pending_alert_that_clears_is_dropped_without_notification() -> None:
    group, (_, sent) = make_group({0: down()})
    await group.evaluate(0)
    await group.evaluate(60)
    assert group.alerting_rules()[0].active == {} and sent == []


async def test_keep_firing_for_holds_a_firing_alert_after_the_condition_clears() -> None:
    group, _ = make_group({t: down() for t in (0, 60, 120)}, keep="2m")
    rule = group.alerting_rules()[0]
    for t in (0, 60, 120, 180, 240):
        await group.evaluate(t)
        assert rule.state == AlertState.FIRING or t < 120
    await group.evaluate(300)
    assert rule.state == AlertState.INACTIVE


async def test_a_failing_query_marks_the_rule_unhealthy_and_the_group_goes_on() -> None:
    async def broken(expr: str, t: float) -> list[Sample]:
        raise RuntimeError("storage away")

    group, _ = make_group({})
    group.query = broken
    await group.evaluate(0)
    rule = group.alerting_rules()[0]
    assert (rule.health.health, rule.health.last_error) == ("err", "storage away")
    assert group.last_evaluation == 0
