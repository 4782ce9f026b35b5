"""The alert state machine: inactive -> pending -> firing -> resolved, driven by explicit times."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from vpsmon.collector.promql import Engine, MemorySource
from vpsmon.collector.rules.alerting import AlertState
from vpsmon.collector.rules.engine import engine_query
from vpsmon.collector.rules.group import RuleGroup
from vpsmon.collector.rules.model import OutputSample, Sample, labels_key
from vpsmon.collector.rules.rulefile import parse_rule_file
from vpsmon.collector.rules.template import Context, expand_alert_template, parse_alert_template
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


# What an alerting rule keeps between evaluations (issue #8: labels, annotation expansions and
# output label sets are reused while a series comes back) must never show a stale value.

CACHED = """
groups:
  - name: g
    interval: 1m
    rules:
      - alert: High
        expr: load > 1
        labels: {{{labels}}}
        annotations: {{{annotations}}}
"""


def cached_group(
    script: dict[float, list[Sample]], labels: str = "", annotations: str = ""
) -> tuple[RuleGroup, Any]:
    spec = parse_rule_file(CACHED.format(labels=labels, annotations=annotations), "r.yml").groups[0]
    written: list[OutputSample] = []
    sent: list[list[dict[str, Any]]] = []

    async def append(samples: list[OutputSample]) -> None:
        written.extend(samples)

    async def notify(alerts: list[dict[str, Any]]) -> None:
        sent.append(alerts)

    group = RuleGroup(spec, query=Scripted(script), append=append, notify=notify)
    for rule in group.alerting_rules():
        rule.restored = True
    return group, (written, sent)


def load(value: float, instance: str = "web1") -> list[Sample]:
    return [Sample({"__name__": "load", "instance": instance}, value)]


async def summaries(group: RuleGroup, times: list[float]) -> list[str]:
    rule = group.alerting_rules()[0]
    out = []
    for t in times:
        await group.evaluate(t)
        out.extend(a.annotations["summary"] for a in rule.active_alerts())
    return out


async def test_an_annotation_follows_the_value_when_the_labels_stay_the_same() -> None:
    values = [2.0, 2.0, 3.5, 2.0, 1e9, float("nan"), float("nan"), 2.0]
    script = {60.0 * i: load(v) for i, v in enumerate(values)}
    group, _ = cached_group(script, annotations='summary: "{{ $value | humanize }}"')
    texts = await summaries(group, sorted(script))
    assert texts == ["2", "2", "3.5", "2", "1G", "NaN", "NaN", "2"]


async def test_a_zero_that_turns_negative_shows_its_sign() -> None:
    # 0 and -0 are equal as floats, but printf and humanize print "-0" for the second.
    script = {0.0: load(0.0), 60.0: load(-0.0), 120.0: load(0.0)}
    group, _ = cached_group(script, annotations='summary: "{{ printf \\"%.1f\\" $value }}"')
    assert await summaries(group, [0.0, 60.0, 120.0]) == ["0.0", "-0.0", "0.0"]


async def test_each_series_has_its_own_annotations_and_new_labels_get_new_text() -> None:
    script = {
        0.0: load(2.0, "web1") + load(2.0, "web2"),
        60.0: load(2.0, "web2") + load(2.0, "web3"),
    }
    group, _ = cached_group(script, annotations='summary: "{{ $labels.instance }}"')
    assert await summaries(group, [0.0, 60.0]) == ["web1", "web2", "web2", "web3"]


async def test_a_label_reading_the_value_makes_a_new_alert_when_the_value_changes() -> None:
    script = {0.0: load(2.0), 60.0: load(2.0), 120.0: load(9.0)}
    group, (written, _) = cached_group(
        script,
        labels="band: '{{ if gt $value 5.0 }}high{{ else }}low{{ end }}'",
        annotations='summary: "{{ $value }}"',
    )
    rule = group.alerting_rules()[0]
    await group.evaluate(0.0)
    await group.evaluate(60.0)
    await group.evaluate(120.0)
    alerts = {a.labels["band"]: a for a in rule.active.values()}
    assert alerts["low"].shown_state == "resolved"
    assert alerts["low"].annotations == {"summary": "2"}
    assert alerts["high"].state == AlertState.FIRING
    assert alerts["high"].annotations == {"summary": "9"}
    bands = [
        (s.labels["band"], is_stale_marker(s.value))
        for s in written
        if s.labels["__name__"] == "ALERTS"
    ]
    assert bands == [("low", False), ("low", False), ("high", False), ("low", True)]


async def test_a_template_calling_query_is_expanded_again_at_every_evaluation() -> None:
    answers = iter([3.0, 4.0, 5.0])

    async def query(expr: str, t: float) -> list[Sample]:
        if expr == "load > 1":
            return load(2.0)
        return [Sample({}, next(answers))]

    group, _ = cached_group(
        {},
        labels="seen: '{{ with query \"other\" }}{{ . | first | value }}{{ end }}'",
        annotations='summary: "{{ $value }}", other: "{{ $labels.seen }}"',
    )
    group.query = query
    rule = group.alerting_rules()[0]
    labels = []
    for t in (0.0, 60.0, 120.0):
        await group.evaluate(t)
        labels.append(sorted(a.labels["seen"] for a in rule.active.values()))
    # The label reads a query: each answer is a new alert (the older ones resolved).
    assert labels == [["3"], ["3", "4"], ["3", "4", "5"]]


async def test_an_annotation_calling_query_or_now_changes_while_the_alert_does_not() -> None:
    answers = iter(["a", "b", "c"])

    async def query(expr: str, t: float) -> list[Sample]:
        if expr == "load > 1":
            return load(2.0)
        return [Sample({"name": next(answers)}, 1.0)]

    group, _ = cached_group(
        {},
        annotations=(
            'summary: "{{ $value }}",'
            ' other: "{{ with query \\"other\\" }}{{ . | first | label \\"name\\" }}{{ end }}",'
            ' at: "{{ now }}"'
        ),
    )
    group.query = query
    rule = group.alerting_rules()[0]
    seen = []
    for t in (0.0, 60.0, 120.0):
        await group.evaluate(t)
        (alert,) = rule.active.values()
        seen.append(alert.annotations)
    assert seen == [
        {"summary": "2", "other": "a", "at": "0"},
        {"summary": "2", "other": "b", "at": "60"},
        {"summary": "2", "other": "c", "at": "120"},
    ]


async def test_alerts_series_follow_the_state_and_stop_while_the_alert_is_away() -> None:
    script = {0.0: load(2.0), 60.0: load(2.0), 180.0: load(2.0), 240.0: load(2.0)}
    group, (written, _) = cached_group(script)
    group.rules[0].hold = 60.0  # type: ignore[union-attr]
    for t in (0.0, 60.0, 120.0, 180.0, 240.0):
        await group.evaluate(t)
    alerts = [
        (s.timestamp, s.labels.get("alertstate"))
        for s in written
        if s.labels["__name__"] == "ALERTS" and not is_stale_marker(s.value)
    ]
    assert alerts == [(0.0, "pending"), (60.0, "firing"), (180.0, "pending"), (240.0, "firing")]
    for_state = [
        (s.timestamp, s.value)
        for s in written
        if s.labels["__name__"] == "ALERTS_FOR_STATE" and not is_stale_marker(s.value)
    ]
    assert for_state == [(0.0, 0.0), (60.0, 0.0), (180.0, 180.0), (240.0, 180.0)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["web1", "web2", "web3"]),
            st.sampled_from([0.0, -0.0, 1.0, 2.5, 1e9, float("nan"), float("inf"), -7.0]),
        ),
        min_size=1,
        max_size=8,
    )
)
async def test_annotations_always_equal_a_fresh_expansion_of_the_current_value(
    steps: list[dict[str, float]],
) -> None:
    template = '{{ $labels.instance }} {{ $value | humanize }} {{ printf \\"%.3g\\" $value }}'
    script = {
        60.0 * i: [Sample({"__name__": "load", "instance": k}, v) for k, v in step.items()]
        for i, step in enumerate(steps)
    }
    group, _ = cached_group(script, annotations=f'summary: "{template}"')
    rule = group.alerting_rules()[0]
    oracle = parse_alert_template(template.replace('\\"', '"'), "oracle")
    ctx = Context(0.0, None, "")
    for i, step in enumerate(steps):
        await group.evaluate(60.0 * i)
        firing = {a.labels["instance"]: a for a in rule.active_alerts()}
        assert sorted(firing) == sorted(step)
        for instance, value in step.items():
            want = await expand_alert_template(
                oracle, {"__name__": "load", "instance": instance}, {}, "", value, ctx
            )
            assert firing[instance].annotations == {"summary": want}


async def test_the_engines_samples_reach_the_rules_keyed_as_the_rules_key_their_labels() -> None:
    # The rules take a query result's key as the series' identity instead of sorting its
    # labels: it must be labels_key(labels), for the step-wise and the columnar evaluator.
    source = MemorySource()
    for t in (0.0, 15.0, 30.0):
        source.add({"__name__": "up", "job": "node", "instance": "b", "zone": ""}, t, 0.0)
        source.add({"__name__": "up", "job": "node", "instance": "a"}, t, 1.0)
    exprs = ["up", "up == 0", "sum by (job, instance) (rate(up[1m])) >= 0", "-up"]
    for columnar in (True, False):
        query = engine_query(Engine(source, columnar=columnar))
        for expr in exprs:
            result = await query(expr, 30.0)
            assert result
            for sample in result:
                assert sample.key is None or sample.key == labels_key(sample.labels)


async def test_firing_alerts_are_sent_again_only_once_the_resend_delay_has_passed() -> None:
    script = {float(t): load(2.0) for t in range(0, 200, 15)}
    group, (_, sent) = cached_group(script)  # no external URL, resend delay 60 s
    sent_at = []
    for t in range(0, 200, 15):
        before = len(sent)
        await group.evaluate(float(t))
        if len(sent) > before:
            sent_at.append((t, sent[-1][0]["endsAt"], sent[-1][0]["generatorURL"]))
    # 60 is not after 0 + 60 (Prometheus: LastSentAt.Add(resendDelay).Before(ts)), 75 is.
    assert [t for t, _, _ in sent_at] == [0, 75, 150]
    # Valid for 4 resend delays; a link relative to the server without an external URL.
    assert sent_at[1][1] == "1970-01-01T00:05:15.000Z"
    assert {url for _, _, url in sent_at} == {"/graph?g0.expr=load+%3E+1&g0.tab=1"}
