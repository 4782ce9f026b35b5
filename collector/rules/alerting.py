"""Alerting rules and the alert state machine, as Prometheus' rules/alerting.go.

Per label set an alert is pending from the first evaluation its expression returns it, firing
once it has been returned for ``for``, and inactive ("resolved") when it is no longer returned
(after ``keep_firing_for`` if set). A resolved alert is kept for 15 minutes so the
resolution reaches the notifiers; a pending alert that disappears is dropped at once.
Every evaluation writes ``ALERTS{alertstate=...}`` (value 1) and ``ALERTS_FOR_STATE`` (value:
the activeAt Unix time) for each pending and firing alert.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from math import copysign
from typing import Any

from vpsmon.collector.rules.model import (
    Labels,
    OutputSample,
    QueryError,
    QueryFunc,
    Sample,
    labels_key,
)
from vpsmon.collector.rules.rulefile import RuleSpec
from vpsmon.collector.rules.template import (
    AlertData,
    Context,
    QuerySample,
    Template,
    alert_data,
    expand_alert_data,
    expand_alert_template,
    parse_alert_template,
)

RESOLVED_RETENTION = 15 * 60.0  # Prometheus' resolvedRetention
ALERT_METRIC = "ALERTS"
ALERT_FOR_STATE_METRIC = "ALERTS_FOR_STATE"


class AlertState(enum.StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


@dataclass
class Alert:
    labels: dict[str, str]  # the series' labels without __name__, plus rule labels, alertname
    annotations: dict[str, str]
    state: AlertState
    active_at: float
    value: float
    fired_at: float | None = None
    resolved_at: float | None = None
    last_sent_at: float | None = None
    valid_until: float | None = None
    keep_firing_since: float | None = None
    # Its ALERTS and ALERTS_FOR_STATE label sets, made by its rule (see _Outputs).
    outputs: _Outputs | None = field(default=None, repr=False, compare=False)

    @property
    def shown_state(self) -> str:
        """The state people see: an inactive alert kept for its resolution is "resolved"."""
        if self.state == AlertState.INACTIVE and self.resolved_at is not None:
            return "resolved"
        return self.state.value

    def needs_sending(self, ts: float, resend_delay: float) -> bool:
        """Prometheus' needsSending: firing or resolved, and not sent since it resolved or
        for longer than the resend delay."""
        if self.state is AlertState.PENDING:
            return False
        last = self.last_sent_at
        if last is None:
            return True
        if self.resolved_at is not None and self.resolved_at > last:
            return True
        return last + resend_delay < ts


@functools.lru_cache(maxsize=4096)
def rfc3339(ts: float) -> str:
    # Cached: the alerts sent together share their times (issue #8: a resend of an alert
    # storm formats ~100,000 startsAt/endsAt, most of them the same few instants).
    text = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def table_link(expr: str) -> str:
    """Prometheus' strutil.TableLinkForExpression."""
    return "/graph?g0.expr=" + urllib.parse.quote_plus(expr) + "&g0.tab=1"


@dataclass
class RuleHealth:
    health: str = "unknown"  # ok, err, unknown
    last_error: str | None = None
    last_evaluation: float | None = None
    evaluation_time: float = 0.0


# What a series of the expression made: (the value the annotations, and the labels if they
# read it, were made for; alert labels; their key; pure annotations). Plain tuples of strings,
# dicts of strings and floats: the garbage collector stops walking them after one look, which
# matters with ~100,000 alerts (issue #8). Never changed once made: alerts share the dicts.
_Made = tuple[float, dict[str, str], Labels, dict[str, str]]

# An alert's output label sets: (state, ALERTS labels, key, ALERTS_FOR_STATE labels, key).
_Outputs = tuple[AlertState, dict[str, str], Labels, dict[str, str], Labels]


class AlertingRule:
    kind = "alerting"

    def __init__(
        self,
        spec: RuleSpec,
        group_labels: Mapping[str, str] | None = None,
        external_labels: Mapping[str, str] | None = None,
        external_url: str = "",
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.expr = spec.expr
        self.hold = spec.for_
        self.keep_firing_for = spec.keep_firing_for
        # Group labels first, the rule's own labels win (Prometheus 3's group labels).
        self.labels: dict[str, str] = {**(group_labels or {}), **spec.labels}
        self.annotations = dict(spec.annotations)
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self._label_templates: dict[str, Template] = {
            k: parse_alert_template(v, self.name) for k, v in self.labels.items()
        }
        self._annotation_templates: dict[str, Template] = {
            k: parse_alert_template(v, self.name) for k, v in self.annotations.items()
        }
        self.active: dict[Labels, Alert] = {}
        # In an alert storm most alerts are the same from one evaluation to the next (issue
        # #8): per series the expression returned last time, its alert labels and the
        # expansions of the pure annotation templates are kept with the value they were made
        # for, and reused while that series comes back (with the same value, for what reads
        # it). Templates calling `query` or `now` are expanded at every evaluation.
        self._values_free = all(t.constant is not None for t in self._label_templates.values())
        self._labels_pure = all(t.deterministic for t in self._label_templates.values())
        self._impure_annotations = [
            (k, t) for k, t in self._annotation_templates.items() if not t.deterministic
        ]
        self._made: dict[Labels, _Made] = {}
        # (external URL, generatorURL of the notifications), made at the first notification.
        self._generator_url: tuple[str, str] | None = None
        self.restored = False
        self.health = RuleHealth()

    @property
    def identity(self) -> tuple[str, Labels]:
        """Name and labels: how Prometheus matches rules across reloads (nameAndLabels)."""
        return (self.name, labels_key(self.labels))

    @property
    def state(self) -> AlertState:
        states = {a.state for a in self.active.values()}
        if AlertState.FIRING in states:
            return AlertState.FIRING
        if AlertState.PENDING in states:
            return AlertState.PENDING
        return AlertState.INACTIVE

    def active_alerts(self) -> list[Alert]:
        """Pending and firing alerts (what /api/v1/alerts lists)."""
        return [a for a in self.active.values() if a.state != AlertState.INACTIVE]

    async def _expand(
        self, template: Template, labels: Mapping[str, str], value: float, ctx: Context
    ) -> str:
        if template.constant is not None:
            return template.constant
        return await expand_alert_template(
            template, labels, self.external_labels, self.external_url, value, ctx
        )

    async def _make(self, series: Mapping[str, str], value: float, ctx: Context) -> _Made:
        """The alert labels of a series at ``value``, and the expanded pure annotations."""
        labels = {k: v for k, v in series.items() if k != "__name__"}
        data: tuple[AlertData, dict[str, Any]] | None = None
        for name, template in self._label_templates.items():
            if template.constant is not None:
                text = template.constant
            else:
                if data is None:
                    data = alert_data(series, self.external_labels, self.external_url, value)
                text = await expand_alert_data(template, data[0], data[1], ctx)
            if text:
                labels[name] = text
            else:  # an empty value removes the label, as Prometheus' labels.Builder
                labels.pop(name, None)
        labels["alertname"] = self.name
        return (value, labels, labels_key(labels), await self._annotate(series, value, ctx))

    async def _annotate(
        self, series: Mapping[str, str], value: float, ctx: Context
    ) -> dict[str, str]:
        # Every name in template order (impure ones filled in at each evaluation), so the
        # annotations keep the rule's order. One dot and set of variables serves them all.
        data, variables = alert_data(series, self.external_labels, self.external_url, value)
        annotations = {}
        for name, template in self._annotation_templates.items():
            if template.constant is not None:
                annotations[name] = template.constant
            elif not template.deterministic:
                annotations[name] = ""
            else:
                annotations[name] = await expand_alert_data(template, data, variables, ctx)
        return annotations

    async def evaluate(
        self, ts: float, query: QueryFunc, limit: int = 0, query_time: float | None = None
    ) -> list[OutputSample]:
        """One evaluation at ``ts``; returns the ALERTS and ALERTS_FOR_STATE samples."""
        at = ts if query_time is None else query_time
        result = await query(self.expr, at)

        async def template_query(expr: str, t: float) -> list[QuerySample]:
            return [QuerySample(dict(s.labels), s.value) for s in await query(expr, t)]

        ctx = Context(at, template_query, self.external_url)
        reuse_labels = self._values_free
        labels_pure = self._labels_pure
        impure = self._impure_annotations
        known = self._made
        made_now: dict[Labels, _Made] = {}
        # Alert key -> what its series made; its value is the sample's (equal, with the same
        # sign, or this very NaN), so the alerts take it from there.
        found: dict[Labels, _Made] = {}
        with_impure: dict[Labels, dict[str, str]] = {}
        for sample in result:
            series = sample.labels
            value = sample.value
            series_key = sample.key
            if series_key is None:
                series_key = labels_key(series)
            made = known.get(series_key)
            if made is None:
                made = await self._make(series, value, ctx)
            else:
                # The same value: equal, and the same sign for zeros (printf "%f" shows -0);
                # NaN never equals itself, so a NaN value is always expanded again.
                was = made[0]
                same = value == was and (value != 0.0 or copysign(1.0, value) == copysign(1.0, was))
                if not same:
                    if reuse_labels:
                        made = (value, made[1], made[2], await self._annotate(series, value, ctx))
                    else:
                        made = await self._make(series, value, ctx)
                elif not labels_pure:
                    made = await self._make(series, value, ctx)
            made_now[series_key] = made
            key = made[2]
            if key in found:
                raise QueryError(
                    "vector contains metrics with the same labelset after applying alert labels"
                )
            found[key] = made
            if impure:
                annotations = dict(made[3])
                for name, template in impure:
                    annotations[name] = await self._expand(template, series, value, ctx)
                with_impure[key] = annotations
        self._made = made_now

        # The loops below run for every alert at every evaluation (issue #8): names are local.
        inactive, pending, firing = AlertState.INACTIVE, AlertState.PENDING, AlertState.FIRING
        active = self.active
        for key, (value, labels, _, annotations) in found.items():
            if impure:
                annotations = with_impure[key]
            alert = active.get(key)
            if alert is not None and alert.state is not inactive:
                alert.value = value
                alert.annotations = annotations
            else:
                active[key] = Alert(dict(labels), annotations, pending, ts, value)

        out: list[OutputSample] = []
        append = out.append
        output = OutputSample
        emit = self.restored
        hold = self.hold
        keep_firing_for = self.keep_firing_for
        gone: list[Labels] = []
        counted = 0
        for key, alert in active.items():
            if key in found:
                if alert.keep_firing_since is not None:
                    alert.keep_firing_since = None
            else:
                keep_firing = False
                if alert.state is firing and keep_firing_for > 0:
                    if alert.keep_firing_since is None:
                        alert.keep_firing_since = ts
                    keep_firing = ts - alert.keep_firing_since < keep_firing_for
                if alert.state is pending or (
                    alert.resolved_at is not None and ts - alert.resolved_at > RESOLVED_RETENTION
                ):
                    gone.append(key)
                if alert.state is not inactive and not keep_firing:
                    alert.state = inactive
                    alert.resolved_at = ts
                if not keep_firing:
                    continue
            counted += 1
            state = alert.state
            if state is pending and ts - alert.active_at >= hold:
                state = alert.state = firing
                alert.fired_at = ts
            if emit:
                made_out = alert.outputs
                if made_out is None or made_out[0] is not state:
                    made_out = alert.outputs = self._output_labels(alert)
                append(output(made_out[1], ts, 1.0, made_out[2]))
                append(output(made_out[3], ts, float(int(alert.active_at)), made_out[4]))
        for key in gone:
            del active[key]
        if limit > 0 and counted > limit:
            self.active = {}
            raise QueryError(f"exceeded limit of {limit} with {counted} alerts")
        return out

    def _output_labels(self, alert: Alert) -> _Outputs:
        """ALERTS{alertstate} and ALERTS_FOR_STATE labels, as Prometheus' sample/forStateSample.

        They depend on the rule's name and labels and the alert's labels and state only (the
        labels of an alert never change): kept on the alert while its state stays the same.
        """
        state = alert.state.value
        labels = {**self.labels, **alert.labels, "__name__": ALERT_METRIC, "alertname": self.name}
        labels["alertstate"] = state
        if alert.outputs is not None:
            _, _, _, for_state, for_state_key = alert.outputs
        else:
            for_state = {
                **self.labels,
                **alert.labels,
                "__name__": ALERT_FOR_STATE_METRIC,
                "alertname": self.name,
            }
            for_state_key = labels_key(for_state)
        return (alert.state, labels, labels_key(labels), for_state, for_state_key)

    def due_notifications(
        self, ts: float, resend_delay: float, interval: float, external_url: str
    ) -> list[dict[str, Any]]:
        """Postable alerts due for the notifiers now; marks them sent (Prometheus' sendAlerts).

        Only alerts that need sending are looked at twice: a pending alert, or one sent less
        than ``resend_delay`` ago and not resolved since, costs one test per evaluation.
        """
        due = []
        valid_until = ts + 4 * max(resend_delay, interval)
        pending = AlertState.PENDING
        for alert in self.active.values():
            # Alert.needs_sending, inlined: it runs for every alert at every evaluation.
            if alert.state is pending:
                continue
            last = alert.last_sent_at
            if (
                last is not None
                and (alert.resolved_at is None or alert.resolved_at <= last)
                and last + resend_delay >= ts
            ):
                continue
            alert.last_sent_at = ts
            alert.valid_until = valid_until
            due.append(self.postable(alert, external_url))
        return due

    def postable(self, alert: Alert, external_url: str) -> dict[str, Any]:
        """An Alertmanager v2 postable alert (notifier.Alert), external labels added."""
        ends = alert.resolved_at if alert.resolved_at is not None else alert.valid_until
        generator = self._generator_url
        if generator is None or generator[0] != external_url:
            generator = (external_url, external_url.rstrip("/") + table_link(self.expr))
            self._generator_url = generator
        body: dict[str, Any] = {
            "labels": {**self.external_labels, **alert.labels},
            "annotations": dict(alert.annotations),
            "startsAt": rfc3339(alert.fired_at if alert.fired_at is not None else alert.active_at),
            "generatorURL": generator[1],
        }
        if ends is not None:
            body["endsAt"] = rfc3339(ends)
        return body


@dataclass
class SavedAlert:
    """An alert as persisted, to restore after a restart."""

    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    active_at: float
    value: float
    fired_at: float | None = None
    resolved_at: float | None = None
    last_sent_at: float | None = None
    keep_firing_since: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_alert(self) -> Alert:
        return Alert(
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            state=self.state,
            active_at=self.active_at,
            value=self.value,
            fired_at=self.fired_at,
            resolved_at=self.resolved_at,
            last_sent_at=self.last_sent_at,
            keep_firing_since=self.keep_firing_since,
        )


def sample_value_string(value: float) -> str:
    """strconv.FormatFloat(v, 'e', -1, 64), as the alerts API shows values ("1e+00")."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if str(value).startswith("-") else ""
    if value == 0:
        return sign + "0e+00"
    _, digit_tuple, exp = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exp, int)
    raw = "".join(map(str, digit_tuple))
    digits = raw.rstrip("0")
    e10 = exp + len(raw) - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"


def sample(labels: Mapping[str, str], value: float) -> Sample:
    return Sample(labels, value)
