"""The route tree and inhibition rules, in Alertmanager's configuration format.

https://prometheus.io/docs/alerting/latest/configuration/#route — a route matches an alert's
labels; the deepest matching children win; `continue: true` lets later siblings match too.
Each route names a `receiver`, which here is the name of a notification channel, or `"*"`
for every enabled channel. Timing and grouping are inherited from the parent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from vpsmon.collector.notify.matchers import Matcher, MatcherError, matches_all, parse_matcher_list
from vpsmon.config import parse_duration

ALL_CHANNELS = "*"

DEFAULT_ROUTING_YAML = """\
# Alertmanager-style routing (docs/notifications.md). receiver: a channel name, or "*" for
# every enabled channel.
route:
  receiver: "*"
  group_by: [alertname, instance]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes: []
# A server that is down mutes its other alerts.
inhibit_rules:
  - source_matchers: ['alertname="ServerDown"']
    target_matchers: ['alertname!="ServerDown"']
    equal: [instance]
"""


class RoutingError(ValueError):
    """An invalid routing document; the message names the place (route.routes[1].matchers)."""


@dataclass(frozen=True)
class Route:
    receiver: str
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = ()
    group_by_all: bool = False
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    continue_: bool = False
    routes: tuple[Route, ...] = ()
    # Position in the tree ("0", "0.2.1"): part of every group key, so editing one branch
    # does not merge its groups with another's.
    path: str = "0"

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """Alertmanager's Route.Match: the matching leaves, in tree order."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            hits = child.match(labels)
            found.extend(hits)
            if hits and not child.continue_:
                break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.group_by_all:
            return dict(labels)
        return {name: labels[name] for name in self.group_by if name in labels}

    def key(self) -> str:
        return "{" + ",".join(str(m) for m in self.matchers) + "}@" + self.path

    def walk(self) -> Iterable[Route]:
        yield self
        for child in self.routes:
            yield from child.walk()


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    def mutes(self, target_labels: Mapping[str, str], firing: Iterable[Mapping[str, str]]) -> bool:
        if not matches_all(self.target, target_labels):
            return False
        for source in firing:
            if source is target_labels or dict(source) == dict(target_labels):
                continue  # an alert never inhibits itself
            if matches_all(self.source, source) and all(
                source.get(n, "") == target_labels.get(n, "") for n in self.equal
            ):
                return True
        return False


@dataclass(frozen=True)
class Routing:
    route: Route
    inhibit_rules: tuple[InhibitRule, ...] = ()
    source: str = field(default=DEFAULT_ROUTING_YAML, compare=False)

    def receivers(self) -> set[str]:
        return {r.receiver for r in self.route.walk()}


_ROUTE_KEYS = {
    "receiver",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "matchers",
    "match",
    "match_re",
    "continue",
    "routes",
}


def _duration(value: Any, where: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as err:
        raise RoutingError(f"{where}: {err}") from None


def _matchers(doc: Mapping[str, Any], where: str, prefix: str = "") -> tuple[Matcher, ...]:
    try:
        found = parse_matcher_list(doc.get(f"{prefix}matchers"), f"{where}.{prefix}matchers")
        # The deprecated match / match_re maps, still common in older configs.
        for key, op in ((f"{prefix}match", "="), (f"{prefix}match_re", "=~")):
            legacy = doc.get(key) or {}
            if not isinstance(legacy, Mapping):
                raise RoutingError(f"{where}.{key}: expected a mapping of label to value")
            found += [Matcher(str(k), op, str(v)) for k, v in legacy.items()]
    except MatcherError as err:
        raise RoutingError(str(err)) from None
    return tuple(found)


def _route(doc: Any, where: str, parent: Route | None, path: str) -> Route:
    if not isinstance(doc, Mapping):
        raise RoutingError(f"{where}: expected a mapping")
    unknown = set(doc) - _ROUTE_KEYS
    if unknown:
        raise RoutingError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    receiver = doc.get("receiver", parent.receiver if parent else None)
    if not isinstance(receiver, str) or not receiver:
        raise RoutingError(f"{where}.receiver: the root route needs a receiver (a channel or *)")
    group_by_raw = doc.get("group_by")
    if group_by_raw is None:
        group_by = parent.group_by if parent else ()
        group_all = parent.group_by_all if parent else False
    else:
        if not isinstance(group_by_raw, list) or not all(isinstance(x, str) for x in group_by_raw):
            raise RoutingError(f"{where}.group_by: expected a list of label names")
        group_all = "..." in group_by_raw
        if group_all and len(group_by_raw) > 1:
            raise RoutingError(f"{where}.group_by: '...' cannot be combined with label names")
        group_by = tuple(x for x in group_by_raw if x != "...")
    inherited = parent or Route(receiver)
    cont = doc.get("continue", False)
    if not isinstance(cont, bool):
        raise RoutingError(f"{where}.continue: expected true or false")
    if parent is None and cont:
        raise RoutingError(f"{where}.continue: the root route cannot continue")
    route = Route(
        receiver=receiver,
        matchers=_matchers(doc, where),
        group_by=group_by,
        group_by_all=group_all,
        group_wait=_duration(doc.get("group_wait", inherited.group_wait), f"{where}.group_wait"),
        group_interval=_duration(
            doc.get("group_interval", inherited.group_interval), f"{where}.group_interval"
        ),
        repeat_interval=_duration(
            doc.get("repeat_interval", inherited.repeat_interval), f"{where}.repeat_interval"
        ),
        continue_=cont,
        path=path,
    )
    if parent is None and route.matchers:
        raise RoutingError(f"{where}: the root route must match every alert (no matchers)")
    children_raw = doc.get("routes") or []
    if not isinstance(children_raw, list):
        raise RoutingError(f"{where}.routes: expected a list of routes")
    children = tuple(
        _route(child, f"{where}.routes[{i}]", route, f"{path}.{i}")
        for i, child in enumerate(children_raw)
    )
    return Route(**{**route.__dict__, "routes": children})


def parse_routing(text: str) -> Routing:
    """Parse and validate a routing document (YAML with `route:` and `inhibit_rules:`)."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise RoutingError(f"{where}invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(doc, Mapping):
        raise RoutingError("the routing document must be a mapping with route:")
    unknown = set(doc) - {"route", "inhibit_rules"}
    if unknown:
        raise RoutingError(f"unknown key {sorted(unknown)[0]!r} (expected route, inhibit_rules)")
    if "route" not in doc:
        raise RoutingError("route: is required")
    route = _route(doc["route"], "route", None, "0")
    rules_raw = doc.get("inhibit_rules") or []
    if not isinstance(rules_raw, list):
        raise RoutingError("inhibit_rules: expected a list")
    rules = []
    for i, item in enumerate(rules_raw):
        where = f"inhibit_rules[{i}]"
        if not isinstance(item, Mapping):
            raise RoutingError(f"{where}: expected a mapping")
        allowed = {
            f"{s}{k}" for s in ("source_", "target_") for k in ("matchers", "match", "match_re")
        }
        unknown = set(item) - allowed - {"equal"}
        if unknown:
            raise RoutingError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        equal = item.get("equal") or []
        if not isinstance(equal, list) or not all(isinstance(x, str) for x in equal):
            raise RoutingError(f"{where}.equal: expected a list of label names")
        source, target = _matchers(item, where, "source_"), _matchers(item, where, "target_")
        if not source or not target:
            raise RoutingError(f"{where}: needs both source_matchers and target_matchers")
        rules.append(InhibitRule(source, target, tuple(equal)))
    return Routing(route, tuple(rules), text)


def default_routing() -> Routing:
    return parse_routing(DEFAULT_ROUTING_YAML)


def check_receivers(routing: Routing, channel_names: Sequence[str]) -> list[str]:
    """Receivers the tree names that are no channel (shown as errors when saving)."""
    known = set(channel_names) | {ALL_CHANNELS}
    return sorted(routing.receivers() - known)
