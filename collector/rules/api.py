"""What the rules show to the outside: Prometheus' /api/v1/rules and /api/v1/alerts objects.

`RulesApi` implements the `RulesView` protocol the HTTP API (web/promapi.py) asks for, and
feeds the rules page (web/rules.py). Shapes follow
https://prometheus.io/docs/prometheus/latest/querying/api/#rules. A user limited to some
servers sees every rule (rule files are shared) but only the alerts of their servers, found
through the alert's labels (``server_of``); without that mapping a limited user sees none.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from vpsmon.collector.rules.alerting import Alert, AlertingRule, rfc3339, sample_value_string
from vpsmon.collector.rules.group import Rule, RuleGroup
from vpsmon.collector.rules.manager import RuleManager

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, what Prometheus shows before a run

ServerOf = Callable[[Mapping[str, str]], int | None]


def _time(ts: float | None) -> str:
    return ZERO_TIME if ts is None else rfc3339(ts)


def alert_json(alert: Alert) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "state": alert.state.value,
        "activeAt": rfc3339(alert.active_at),
        "value": sample_value_string(alert.value),
    }
    if alert.keep_firing_since is not None:
        out["keepFiringSince"] = rfc3339(alert.keep_firing_since)
    return out


class InstanceIndex:
    """Which server an alert concerns, from its ``instance`` label (the scrape target's)."""

    def __init__(self) -> None:
        self.by_instance: dict[str, int] = {}

    def update(self, targets: Iterable[tuple[str, int]]) -> None:
        self.by_instance = dict(targets)

    def __call__(self, labels: Mapping[str, str]) -> int | None:
        return self.by_instance.get(labels.get("instance", ""))


class RulesApi:
    def __init__(
        self,
        manager: RuleManager,
        server_of: ServerOf | None = None,
        builder_file: Path | None = None,
    ) -> None:
        self.manager = manager
        self.server_of = server_of
        self.builder_file = builder_file  # where the UI's rule builder saves rules

    def _visible(self, alert: Alert, visible: Collection[int] | None) -> bool:
        if visible is None:
            return True
        if self.server_of is None:
            return False
        server = self.server_of(alert.labels)
        return server is not None and server in visible

    def rule_json(self, rule: Rule, visible: Collection[int] | None) -> dict[str, Any]:
        health = rule.health
        out: dict[str, Any] = {"name": rule.name, "query": rule.expr, "labels": dict(rule.labels)}
        if isinstance(rule, AlertingRule):
            alerts = [a for a in rule.active_alerts() if self._visible(a, visible)]
            out.update(
                {
                    "state": _rule_state(alerts),
                    "duration": rule.hold,
                    "keepFiringFor": rule.keep_firing_for,
                    "annotations": dict(rule.annotations),
                    "alerts": [alert_json(a) for a in alerts],
                    "type": "alerting",
                }
            )
        else:
            out["type"] = "recording"
        out["health"] = health.health
        if health.last_error:
            out["lastError"] = health.last_error
        out["evaluationTime"] = health.evaluation_time
        out["lastEvaluation"] = _time(health.last_evaluation)
        return out

    def group_json(self, group: RuleGroup, visible: Collection[int] | None) -> dict[str, Any]:
        return {
            "name": group.name,
            "file": group.file,
            "rules": [self.rule_json(r, visible) for r in group.rules],
            "interval": group.interval,
            "limit": group.limit,
            "evaluationTime": group.evaluation_time,
            "lastEvaluation": _time(group.last_evaluation),
        }

    def rule_groups(self, visible: Collection[int] | None) -> list[dict[str, Any]]:
        return [self.group_json(g, visible) for g in self.manager.sorted_groups()]

    def alerts(self, visible: Collection[int] | None) -> list[dict[str, Any]]:
        return [
            alert_json(a)
            for g in self.manager.sorted_groups()
            for rule in g.alerting_rules()
            for a in rule.active_alerts()
            if self._visible(a, visible)
        ]

    def file_errors(self) -> dict[str, list[str]]:
        """Rule files that failed to load (their previous rules keep running)."""
        return self.manager.errors()


def _rule_state(alerts: list[Alert]) -> str:
    states = {a.state.value for a in alerts}
    for state in ("firing", "pending"):
        if state in states:
            return state
    return "inactive"
