"""The rule builder: metric, condition, threshold, duration and servers in, a valid rule out.

The UI's form (web/rules.py) offers common VPS measures; the builder writes the PromQL,
checks the resulting rule file with the same reader as `vpsmon rules check`, and can add it
to the builder's own rule file, which the rule manager loads like any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from vpsmon.collector.rules.durations import parse_duration
from vpsmon.collector.rules.rulefile import RuleFileError, parse_rule_file

_REAL_FS = 'fstype!~"tmpfs|ramfs|devtmpfs|overlay|squashfs"'
_REAL_NIC = 'device!~"lo|veth.*|docker.*|br-.*"'

# name -> (PromQL with {sel} / {sel0} where the server matcher goes, unit shown in the summary)
METRICS: dict[str, tuple[str, str]] = {
    "cpu_percent": (
        "100 * (1 - avg without (cpu, mode)"
        ' (rate(node_cpu_seconds_total{{mode="idle"{sel}}}[5m])))',
        "%",
    ),
    "memory_percent": (
        "100 * (1 - node_memory_MemAvailable_bytes{{{sel0}}}"
        " / node_memory_MemTotal_bytes{{{sel0}}})",
        "%",
    ),
    "disk_percent": (
        f"100 * (1 - node_filesystem_avail_bytes{{{{{_REAL_FS}{{sel}}}}}}"
        f" / node_filesystem_size_bytes{{{{{_REAL_FS}{{sel}}}}}})",
        "%",
    ),
    "load_per_cpu": (
        "node_load5{{{sel0}}} / count without (cpu, mode)"
        ' (node_cpu_seconds_total{{mode="idle"{sel}}})',
        "",
    ),
    "up": ("up{{{sel0}}}", ""),
    "network_receive_bytes": (
        "sum without (device)"
        f" (rate(node_network_receive_bytes_total{{{{{_REAL_NIC}{{sel}}}}}}[5m]))",
        "B/s",
    ),
    "network_transmit_bytes": (
        "sum without (device)"
        f" (rate(node_network_transmit_bytes_total{{{{{_REAL_NIC}{{sel}}}}}}[5m]))",
        "B/s",
    ),
}
CONDITIONS = (">", ">=", "<", "<=", "==", "!=")
SEVERITIES = ("critical", "warning", "info")
ALERT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


class BuilderError(ValueError):
    """Bad builder input: ``errors`` maps a form field to its message key and detail."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


@dataclass(frozen=True)
class BuiltRule:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str

    def as_dict(self) -> dict[str, object]:
        rule: dict[str, object] = {"alert": self.name, "expr": self.expr}
        if parse_duration(self.for_):
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {"summary": self.summary}
        return rule

    def yaml(self) -> str:
        return yaml.safe_dump([self.as_dict()], sort_keys=False, allow_unicode=True)


def _quote_regex(text: str) -> str:
    return re.escape(text).replace("\\", "\\\\").replace('"', '\\"')


def build_rule(form: Mapping[str, str], instances: Sequence[str]) -> BuiltRule:
    """The rule for the form's fields; ``instances`` limits it to those servers (all if empty)."""
    errors: dict[str, str] = {}
    name = form.get("name", "").strip()
    if not ALERT_NAME.match(name):
        errors["name"] = "builder.error.name"
    metric = form.get("metric", "")
    if metric not in METRICS:
        errors["metric"] = "builder.error.metric"
    condition = form.get("condition", "")
    if condition not in CONDITIONS:
        errors["condition"] = "builder.error.condition"
    threshold_text = form.get("threshold", "").strip()
    try:
        threshold = float(threshold_text)
        if threshold != threshold or threshold in (float("inf"), float("-inf")):
            raise ValueError
    except ValueError:
        errors["threshold"] = "builder.error.threshold"
    duration = form.get("for", "").strip() or "0s"
    try:
        parse_duration(duration)
    except ValueError:
        errors["for"] = "builder.error.duration"
    severity = form.get("severity", "warning")
    if severity not in SEVERITIES:
        errors["severity"] = "builder.error.severity"
    if errors:
        raise BuilderError(errors)
    if instances:
        regex = "|".join(_quote_regex(i) for i in instances)
        sel, sel0 = f', instance=~"{regex}"', f'instance=~"{regex}"'
    else:
        sel, sel0 = "", ""
    template, unit = METRICS[metric]
    expr = template.format(sel=sel, sel0=sel0).replace("{}", "") + f" {condition} {threshold_text}"
    summary = "{{ $labels.instance }}: " + metric + ' is {{ $value | printf "%.2f" }}' + unit
    rule = BuiltRule(name, expr, duration, severity, summary)
    check_rule(rule)
    return rule


def check_rule(rule: BuiltRule, group: str = "builder") -> None:
    """Raise BuilderError unless the rule passes the same check as `vpsmon rules check`."""
    text = yaml.safe_dump({"groups": [{"name": group, "rules": [rule.as_dict()]}]})
    try:
        parse_rule_file(text, "builder")
    except RuleFileError as err:
        raise BuilderError({"expr": err.errors[0]}) from None


def add_to_file(path: Path, rule: BuiltRule, group: str = "builder") -> None:
    """Append the rule to the builder's rule file (one group), checking the whole result."""
    document: dict[str, list[dict[str, object]]] = {"groups": []}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        document = loaded if isinstance(loaded, dict) else {"groups": []}
    groups = document.setdefault("groups", [])
    target = next((g for g in groups if g.get("name") == group), None)
    if target is None:
        target = {"name": group, "rules": []}
        groups.append(target)
    rules = target.setdefault("rules", [])
    assert isinstance(rules, list)
    rules.append(rule.as_dict())
    text = "# Written by the rule builder in the vpsmon UI.\n" + yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True
    )
    try:
        parse_rule_file(text, str(path))
    except RuleFileError as err:
        raise BuilderError({"name": err.errors[0]}) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # atomic: the manager never reads half a file
