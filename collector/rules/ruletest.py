"""`vpsmon rules test`: unit tests of rules in promtool's format, with promtool's semantics.

https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/ describes the
file. As in promtool (cmd/promtool/unittest.go): input samples are loaded up to each
evaluation time, every group is evaluated at 0, evaluation_interval, ... up to the largest
eval_time (in group_eval_order, then file order), alerts are compared at the evaluation
step that covers their eval_time (firing alerts only, exact labels and annotations), and
promql_expr_test expressions are evaluated at the end over the input plus every rule output.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from vpsmon.collector.promql import Engine, MemorySource, PromQLError, Scalar, Vector
from vpsmon.collector.promql.notation import NotationError, expand_values, parse_series
from vpsmon.collector.rules.alerting import AlertingRule, AlertState, sample_value_string
from vpsmon.collector.rules.durations import format_duration, parse_duration
from vpsmon.collector.rules.engine import engine_query
from vpsmon.collector.rules.group import RuleGroup
from vpsmon.collector.rules.model import OutputSample
from vpsmon.collector.rules.rulefile import RuleFileError, load_rule_file

FILE_KEYS = {"rule_files", "evaluation_interval", "group_eval_order", "tests", "fuzzy_compare"}
GROUP_KEYS = {
    "interval",
    "input_series",
    "alert_rule_test",
    "promql_expr_test",
    "external_labels",
    "external_url",
    "name",
}
SERIES_KEYS = {"series", "values"}
ALERT_TEST_KEYS = {"eval_time", "alertname", "exp_alerts"}
EXP_ALERT_KEYS = {"exp_labels", "exp_annotations"}
EXPR_TEST_KEYS = {"expr", "eval_time", "exp_samples"}
EXP_SAMPLE_KEYS = {"labels", "value"}


class TestFileError(ValueError):
    """The test file itself is malformed."""


def _strict(item: Any, keys: set[str], what: str) -> dict[str, Any]:
    if item is None:
        return {}
    if not isinstance(item, dict):
        raise TestFileError(f"{what}: expected a mapping, got {type(item).__name__}")
    unknown = sorted(set(map(str, item)) - keys)
    if unknown:
        raise TestFileError(
            f'{what}: unknown field "{unknown[0]}" (allowed: {", ".join(sorted(keys))})'
        )
    return item


def _list(item: Any, what: str) -> list[Any]:
    if item is None:
        return []
    if not isinstance(item, list):
        raise TestFileError(f"{what}: expected a list")
    return item


def _duration(item: Any, what: str) -> float:
    if item is None:
        return 0.0
    try:
        return parse_duration(str(item))
    except ValueError as err:
        raise TestFileError(f"{what}: {err}") from None


def _string_map(item: Any, what: str) -> dict[str, str]:
    if item is None:
        return {}
    if not isinstance(item, dict):
        raise TestFileError(f"{what}: expected a mapping of strings")
    return {str(k): "" if v is None else str(v) for k, v in item.items()}


@dataclass
class AlertCase:
    eval_time: float
    alertname: str
    expected: list[tuple[dict[str, str], dict[str, str]]]


@dataclass
class ExprCase:
    expr: str
    eval_time: float
    samples: list[tuple[str, float]]


@dataclass
class TestGroup:
    interval: float
    series: list[tuple[str, str]]
    alerts: list[AlertCase] = field(default_factory=list)
    exprs: list[ExprCase] = field(default_factory=list)
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    name: str = ""


@dataclass
class TestFile:
    rule_files: list[str]
    evaluation_interval: float
    group_eval_order: list[str]
    tests: list[TestGroup]
    fuzzy_compare: bool = False
    warnings: list[str] = field(default_factory=list)


def read_test_file(path: str) -> TestFile:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise TestFileError(f"{path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise TestFileError(f"{path}: invalid YAML: {err}") from None
    top = _strict(data, FILE_KEYS, path)
    interval = _duration(top.get("evaluation_interval"), "evaluation_interval") or 60.0
    order = [str(g) for g in _list(top.get("group_eval_order"), "group_eval_order")]
    seen: set[str] = set()
    for name in order:
        if name in seen:
            raise TestFileError(f"group name repeated in evaluation order: {name}")
        seen.add(name)
    base = os.path.dirname(path)
    files: list[str] = []
    warnings: list[str] = []
    for pattern in _list(top.get("rule_files"), "rule_files"):
        pattern = str(pattern)
        if pattern and not os.path.isabs(pattern):
            pattern = os.path.join(base, pattern)
        found = sorted(glob.glob(pattern))
        if not found:
            warnings.append(f"  WARNING: no file match pattern {pattern}")
        files.extend(found)
    tests = [
        _test_group(item, interval, i) for i, item in enumerate(_list(top.get("tests"), "tests"))
    ]
    return TestFile(files, interval, order, tests, bool(top.get("fuzzy_compare")), warnings)


def _test_group(item: Any, eval_interval: float, index: int) -> TestGroup:
    what = f"tests[{index}]"
    tg = _strict(item, GROUP_KEYS, what)
    series = []
    for j, s in enumerate(_list(tg.get("input_series"), f"{what}.input_series")):
        s = _strict(s, SERIES_KEYS, f"{what}.input_series[{j}]")
        series.append((str(s.get("series") or ""), str(s.get("values") or "")))
    alerts = []
    for j, a in enumerate(_list(tg.get("alert_rule_test"), f"{what}.alert_rule_test")):
        a = _strict(a, ALERT_TEST_KEYS, f"{what}.alert_rule_test[{j}]")
        expected = []
        for k, e in enumerate(
            _list(a.get("exp_alerts"), f"{what}.alert_rule_test[{j}].exp_alerts")
        ):
            e = _strict(e, EXP_ALERT_KEYS, f"{what}.alert_rule_test[{j}].exp_alerts[{k}]")
            expected.append(
                (
                    _string_map(e.get("exp_labels"), "exp_labels"),
                    _string_map(e.get("exp_annotations"), "exp_annotations"),
                )
            )
        alerts.append(
            AlertCase(
                _duration(a.get("eval_time"), "eval_time"), str(a.get("alertname") or ""), expected
            )
        )
    exprs = []
    for j, p in enumerate(_list(tg.get("promql_expr_test"), f"{what}.promql_expr_test")):
        p = _strict(p, EXPR_TEST_KEYS, f"{what}.promql_expr_test[{j}]")
        samples = []
        for k, s in enumerate(
            _list(p.get("exp_samples"), f"{what}.promql_expr_test[{j}].exp_samples")
        ):
            s = _strict(s, EXP_SAMPLE_KEYS, f"{what}.promql_expr_test[{j}].exp_samples[{k}]")
            value = s.get("value", 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise TestFileError(f"{what}.promql_expr_test[{j}]: value must be a number")
            try:
                number = float(value)
            except ValueError:
                raise TestFileError(
                    f"{what}.promql_expr_test[{j}]: value must be a number"
                ) from None
            samples.append((str(s.get("labels") or ""), number))
        exprs.append(
            ExprCase(str(p.get("expr") or ""), _duration(p.get("eval_time"), "eval_time"), samples)
        )
    return TestGroup(
        interval=_duration(tg.get("interval"), f"{what}.interval") or eval_interval,
        series=series,
        alerts=alerts,
        exprs=exprs,
        external_labels=_string_map(tg.get("external_labels"), "external_labels"),
        external_url=str(tg.get("external_url") or ""),
        name=str(tg.get("name") or ""),
    )


# ---------------------------------------------------------------------------- running


def labels_string(labels: dict[str, str]) -> str:
    """Prometheus' labels.String(): {a="b", c="d"} sorted by name."""
    inner = ", ".join(f"{k}={_go_quote(v)}" for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _value_string(value: float) -> str:
    return sample_value_string(value).upper().replace("NAN", "NaN").replace("INF", "Inf")


class _Loader:
    """Input samples, handed to the source lazily up to each evaluation time (LazyLoader)."""

    def __init__(self, source: MemorySource, group: TestGroup) -> None:
        self.source = source
        self.pending: list[tuple[dict[str, str], list[tuple[float, float]], int]] = []
        for text, values in group.series:
            try:
                labels = parse_series(text)
                expanded = expand_values(values)
            except NotationError as err:
                raise TestFileError(str(err)) from None
            points = [(i * group.interval, v) for i, v in enumerate(expanded) if v is not None]
            self.pending.append((labels, points, 0))

    def till(self, ts: float) -> None:
        for n, (labels, points, pos) in enumerate(self.pending):
            while pos < len(points) and points[pos][0] <= ts + 1e-9:
                self.source.add(labels, points[pos][0], points[pos][1])
                pos += 1
            self.pending[n] = (labels, points, pos)


def _same(a: float, b: float, fuzzy: bool) -> bool:
    if a == b:
        return True
    if fuzzy:
        return math.nextafter(a, -math.inf) == b or math.nextafter(a, math.inf) == b
    return False


async def run_test_group(tf: TestFile, tg: TestGroup) -> list[str]:
    source = MemorySource()
    loader = _Loader(source, tg)
    engine = Engine(source, default_subquery_step=tf.evaluation_interval)
    query = engine_query(engine)

    async def append(samples: list[OutputSample]) -> None:
        for s in samples:
            source.add(s.labels, s.timestamp, s.value)

    groups: list[RuleGroup] = []
    errors: list[str] = []
    for path in tf.rule_files:
        try:
            rule_file = load_rule_file(path)
        except RuleFileError as err:
            errors.extend(err.errors)
            continue
        for spec in rule_file.groups:
            groups.append(
                RuleGroup(
                    spec,
                    query=query,
                    append=append,
                    default_interval=tg.interval,
                    external_labels=tg.external_labels,
                    external_url=tg.external_url,
                )
            )
    if errors:
        return errors
    order = {name: i for i, name in enumerate(tf.group_eval_order)}
    groups.sort(key=lambda g: order.get(g.name, 0))  # stable: file order among equals
    for group in groups:
        for alerting in group.alerting_rules():
            alerting.restored = True

    for case in tg.alerts:
        if not case.alertname:
            where = f" (in TestGroup {tg.name})" if tg.name else ""
            return [
                "an item under alert_rule_test misses required attribute alertname at "
                f"eval_time {format_duration(case.eval_time)}{where}"
            ]
    alert_times = sorted({c.eval_time for c in tg.alerts})
    max_time = max([c.eval_time for c in tg.alerts] + [c.eval_time for c in tg.exprs] + [0.0])
    step = tf.evaluation_interval
    curr = 0
    n = 0
    while n * step <= max_time + 1e-9:
        ts = n * step
        n += 1
        loader.till(ts)
        eval_errors = []
        for group in groups:
            await group.evaluate(ts)
            for rule in group.rules:
                if rule.health.health == "err" and rule.health.last_evaluation == ts:
                    eval_errors.append(
                        f"    rule: {rule.name}, time: {format_duration(ts)}, "
                        f"err: {rule.health.last_error}"
                    )
        errors.extend(eval_errors)
        if eval_errors:
            return errors
        while curr < len(alert_times) and ts <= alert_times[curr] < ts + step:
            t = alert_times[curr]
            curr += 1
            for case in (c for c in tg.alerts if c.eval_time == t):
                errors.extend(_check_alerts(tg, groups, case, tf.fuzzy_compare))

    for expr_case in tg.exprs:
        errors.extend(await _check_expr(engine, expr_case, tf.fuzzy_compare))
    return errors


def _alert_key(labels: dict[str, str], annotations: dict[str, str]) -> tuple[Any, ...]:
    return (sorted(labels.items()), sorted(annotations.items()))


def _alerts_string(items: list[tuple[dict[str, str], dict[str, str]]]) -> str:
    if not items:
        return "[]"
    parts = []
    for i, (labels, notes) in enumerate(items):
        body = f"Labels:{labels_string(labels)}\nAnnotations:{labels_string(notes)}"
        parts.append(f"{i}:" + "\n  " + body.replace("\n", "\n  "))
    return "[\n" + ",\n".join(parts) + "\n]"


def _check_alerts(
    tg: TestGroup, groups: Sequence[RuleGroup], case: AlertCase, fuzzy: bool
) -> list[str]:
    got: list[tuple[dict[str, str], dict[str, str]]] = []
    for group in groups:
        for rule in group.rules:
            if isinstance(rule, AlertingRule) and rule.name == case.alertname:
                got.extend(
                    (dict(a.labels), dict(a.annotations))
                    for a in rule.active.values()
                    if a.state == AlertState.FIRING
                )
    expected = [({**labels, "alertname": case.alertname}, ann) for labels, ann in case.expected]
    got.sort(key=lambda x: _alert_key(*x))
    expected.sort(key=lambda x: _alert_key(*x))
    if [_alert_key(*x) for x in got] == [_alert_key(*x) for x in expected]:
        return []
    name = f"    name: {tg.name},\n" if tg.name else ""
    indent = "            "
    exp = _alerts_string(expected).replace("\n", "\n" + indent)
    gotten = _alerts_string(got).replace("\n", "\n" + indent)
    return [
        f"{name}    alertname: {case.alertname}, time: {format_duration(case.eval_time)}, \n"
        f"        exp:{exp}, \n        got:{gotten}"
    ]


def _parse_metric(text: str) -> dict[str, str]:
    """parser.ParseMetric: a series, or ``{}`` for the empty label set of a scalar."""
    if text.replace(" ", "") == "{}":
        return {}
    return parse_series(text)


async def _check_expr(engine: Engine, case: ExprCase, fuzzy: bool) -> list[str]:
    when = format_duration(case.eval_time)
    try:
        value = await engine.instant_query(case.expr, case.eval_time)
    except PromQLError as err:
        return [f'    expr: "{case.expr}", time: {when}, err: {err}']
    if isinstance(value, Vector):
        got = [(dict(s.labels), s.value) for s in value.samples]
    elif isinstance(value, Scalar):
        got = [({}, value.value)]
    else:
        return [
            f'    expr: "{case.expr}", time: {when}, err: rule result is not a vector or scalar'
        ]
    expected = []
    for text, number in case.samples:
        try:
            expected.append((_parse_metric(text), number))
        except NotationError as err:
            return [f'    expr: "{case.expr}", time: {when}, err: labels "{text}": {err}']
    got.sort(key=lambda s: sorted(s[0].items()))
    expected.sort(key=lambda s: sorted(s[0].items()))
    same = len(got) == len(expected) and all(
        g[0] == e[0] and _same(g[1], e[1], fuzzy) for g, e in zip(got, expected, strict=True)
    )
    if same:
        return []

    def show(samples: list[tuple[dict[str, str], float]]) -> str:
        if not samples:
            return "nil"
        return ", ".join(f"{labels_string(lb)} {_value_string(v)}" for lb, v in samples)

    return [
        f'    expr: "{case.expr}", time: {when},\n'
        f"        exp: {show(expected)}\n        got: {show(got)}"
    ]


async def run_test_file(path: str, err: TextIO | None = None) -> list[str]:
    try:
        tf = read_test_file(path)
    except TestFileError as exc:
        return [str(exc)]
    for warning in tf.warnings:
        if err is not None:
            print(warning, file=err)
    errors: list[str] = []
    for tg in tf.tests:
        try:
            errors.extend(await run_test_group(tf, tg))
        except TestFileError as exc:
            errors.append(str(exc))
    return errors


async def run_test_files(paths: Sequence[str], out: TextIO, err: TextIO) -> int:
    """promtool test rules: 0 when every test passes, 1 otherwise."""
    failed = False
    for path in paths:
        print(f"Unit Testing:  {path}", file=out)
        errors = await run_test_file(path, err)
        if errors:
            print("  FAILED:", file=err)
            for line in errors:
                print(line, file=err)
                print(file=out)
            failed = True
        else:
            print("  SUCCESS", file=out)
        print(file=out)
    return 1 if failed else 0
