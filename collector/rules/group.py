"""A rule group: its rules evaluated in order at one timestamp (Prometheus' Group.Eval).

`RuleGroup.evaluate(now)` is one step; the manager's loop calls it at the group's interval,
and `vpsmon rules test` calls it at the test's times (STYLE.md: time is passed in).
After each evaluation the group stores its rules' outputs, writes staleness markers for
series a rule no longer returns, and hands the alerts that are due to the notify function.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from vpsmon.collector.rules.alerting import AlertingRule
from vpsmon.collector.rules.model import (
    AppendFunc,
    Labels,
    NotifyFunc,
    OutputSample,
    QueryFunc,
    labels_key,
)
from vpsmon.collector.rules.recording import RecordingRule
from vpsmon.collector.rules.rulefile import GroupSpec
from vpsmon.collector.storage.query import STALE_NAN

log = logging.getLogger("vpsmon.rules")

Rule = AlertingRule | RecordingRule

DEFAULT_RESEND_DELAY = 60.0  # Prometheus' --rules.alert.resend-delay


async def _discard(samples: list[OutputSample]) -> None:
    return None


async def _no_notify(alerts: list[dict[str, Any]]) -> None:
    return None


def build_rules(
    spec: GroupSpec, external_labels: Mapping[str, str], external_url: str
) -> list[Rule]:
    rules: list[Rule] = []
    for rule in spec.rules:
        if rule.kind == "alert":
            rules.append(AlertingRule(rule, spec.labels, external_labels, external_url))
        else:
            rules.append(RecordingRule(rule, spec.labels))
    return rules


class RuleGroup:
    def __init__(
        self,
        spec: GroupSpec,
        *,
        query: QueryFunc,
        append: AppendFunc = _discard,
        notify: NotifyFunc = _no_notify,
        default_interval: float = 60.0,
        external_labels: Mapping[str, str] | None = None,
        external_url: str = "",
        resend_delay: float = DEFAULT_RESEND_DELAY,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.file = spec.file
        self.key = spec.key
        self.interval = spec.interval or default_interval
        self.query_offset = spec.query_offset or 0.0
        self.limit = spec.limit
        self.query = query
        self.append = append
        self.notify = notify
        self.external_url = external_url
        self.resend_delay = resend_delay
        self.rules = build_rules(spec, external_labels or {}, external_url)
        self.last_evaluation: float | None = None
        self.evaluation_time = 0.0
        self._previous_samples: list[dict[Labels, Mapping[str, str]]] = [{} for _ in self.rules]

    def alerting_rules(self) -> list[AlertingRule]:
        return [r for r in self.rules if isinstance(r, AlertingRule)]

    def copy_state(self, old: RuleGroup) -> None:
        """Carry alerts, health and series from the group this one replaces on reload.

        Rules are matched by name and labels, as Prometheus' Group.CopyState does.
        """
        self.last_evaluation = old.last_evaluation
        self.evaluation_time = old.evaluation_time
        by_identity: dict[tuple[str, Labels], list[int]] = {}
        for i, rule in enumerate(old.rules):
            by_identity.setdefault(rule.identity, []).append(i)
        for i, rule in enumerate(self.rules):
            matches = by_identity.get(rule.identity)
            if not matches:
                continue
            j = matches.pop(0)
            previous = old.rules[j]
            rule.health = previous.health
            self._previous_samples[i] = old._previous_samples[j]
            if isinstance(rule, AlertingRule) and isinstance(previous, AlertingRule):
                rule.active = previous.active
                rule.restored = previous.restored

    def stale_markers(self, ts: float) -> list[OutputSample]:
        """Markers for every series this group wrote last: used when the group goes away."""
        return [
            OutputSample(labels, ts, STALE_NAN)
            for series in self._previous_samples
            for labels in series.values()
        ]

    async def evaluate(self, now: float) -> None:
        started = time.perf_counter()
        ts = now
        query_time = now - self.query_offset
        due: list[dict[str, Any]] = []
        outputs: list[OutputSample] = []
        for i, rule in enumerate(self.rules):
            rule_started = time.perf_counter()
            try:
                samples = await rule.evaluate(ts, self.query, self.limit, query_time)
            except Exception as err:  # one broken rule must not stop the others
                rule.health.health = "err"
                rule.health.last_error = str(err) or type(err).__name__
                rule.health.last_evaluation = ts
                rule.health.evaluation_time = time.perf_counter() - rule_started
                log.warning(
                    "rule evaluation failed group=%s rule=%s error=%s",
                    self.name,
                    rule.name,
                    rule.health.last_error,
                )
                continue
            rule.health.health = "ok"
            rule.health.last_error = None
            rule.health.last_evaluation = ts
            rule.health.evaluation_time = time.perf_counter() - rule_started
            if isinstance(rule, AlertingRule):
                due.extend(
                    rule.due_notifications(ts, self.resend_delay, self.interval, self.external_url)
                )
            # Rule outputs come with their key (labels never changed once made): no sorting
            # or copying per series per cycle (issue #8: ~170,000 of them in an alert storm).
            current: dict[Labels, Mapping[str, str]] = {
                (s.key if s.key is not None else labels_key(s.labels)): s.labels for s in samples
            }
            outputs.extend(samples)
            stamp = samples[0].timestamp if samples else query_time
            previous = self._previous_samples[i]
            outputs.extend(
                [
                    OutputSample(labels, stamp, STALE_NAN)
                    for key, labels in previous.items()
                    if key not in current
                ]
            )
            self._previous_samples[i] = current
        if outputs:
            try:
                await self.append(outputs)
            except Exception as err:
                log.warning("cannot store rule results group=%s error=%s", self.name, err)
        if due:
            try:
                await self.notify(due)
            except Exception as err:
                log.warning("notify failed group=%s alerts=%d error=%s", self.name, len(due), err)
        self.last_evaluation = ts
        self.evaluation_time = time.perf_counter() - started
